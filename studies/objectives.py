"""Scoring one trial: the same grouped folds for every trial, fold by fold, so a pruner can act.

The data set is loaded and split ONCE per study, from the seed, outside the objective (Optuna's
habit); every trial trains and scores on exactly those folds. A search never scores on the test
part of the folds `benchmarks.run` reports: its trials score on `StudyData.search_folds()`, each
inside one fold's training part (trained on the training part less a group carve for early
stopping, scored on the fold's validation part), or, with `studies.hpo --nested`, on inner folds
of each outer training part (`studies.nested`). Ablations compare fixed variants and score on the
folds themselves, like the benchmark. The best trial's value selected its parameters, so it is an
optimistic estimate of them; the nested search gives the honest one.

After each fold the running mean is reported (`trial.report(mean, step=fold)`), so a
`MedianPruner` stops a trial whose first folds already score below the median of earlier trials.
Classical models on CNN embeddings use fold k's MicroCrystalNet (trained on fold k's training part
only, at the study's profile), trained once per study set-up and cached under the studies folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import optuna

from mcn.experiment import tracking
from mcn.experiment.stats import summarize
from mcn.experiment.profiles import Profile
from mcn.data.splits import Fold
from mcn.errors import DataError
from mcn.metrics import SUMMARY_METRICS
from studies import runs, spaces

OBJECTIVE = "f1_macro"
CNN = "microcrystalnet"


@dataclass
class StudyData:
    """What every trial of a study shares: data, folds, profile, fixed hyper-parameters, features."""

    dataset: object
    folds: list[Fold]
    profile: Profile
    seed: int
    root: Path
    hparams: dict = field(default_factory=dict)
    fingerprint: str = ""
    group_by: str = "image"
    group_reason: str = ""
    size_features: str = "none"
    n_jobs: int = 1
    _handcrafted: np.ndarray | None = None
    _embeddings: dict[int, np.ndarray] | None = None

    @classmethod
    def load(cls, data: str | None, n_folds: int, seed: int, profile: Profile, root: Path,
             hparams: dict | None = None, group_by: str | None = None,
             size_features: str = "auto", n_jobs: int = 1) -> "StudyData":
        """Load the data set (None: the default synthetic one) and make its grouped folds."""
        from mcn.data.load import load_dataset
        from mcn.data.splits import make_folds, resolve_grouping

        dataset = load_dataset(data)
        if len(dataset) == 0:
            raise DataError(f"{data or dataset.root}: the data set holds no crystals")
        from features.handcrafted import resolve_size_features

        group_by, why = resolve_grouping(dataset, n_folds, group_by)
        folds = make_folds(dataset, n_splits=n_folds, seed=seed, group_by=group_by)
        size_features = resolve_size_features(dataset, size_features)[0]
        return cls(dataset, folds, profile, seed, Path(root), dict(hparams or {}), dataset.fingerprint(),
                   group_by, why, size_features, n_jobs)

    def search_folds(self, carve: bool = True) -> list[Fold]:
        """One search split inside each fold's training part, scored on its validation part; `carve`
        keeps an early-stopping part (CNNs) out of the search's training rows."""
        from mcn.data.splits import validation_fold

        return [validation_fold(self.dataset, f, self.group_by, self.seed + 1 + f.index, carve) for f in self.folds]

    def test_train_ratio(self) -> float:
        """n_test / n_train averaged over the folds, for the corrected resampled t-test."""
        n = len(self.dataset)
        return float(np.mean([len(f.test) / (n - len(f.test)) for f in self.folds]))

    def config(self) -> dict:
        """The settings a study's scores depend on (stored with the study, checked on resume)."""
        return {"data_fingerprint": self.fingerprint, "data_name": self.dataset.name,
                "folds": len(self.folds), "group_by": self.group_by,
                "size_features": self.size_features, "seed": self.seed, "profile": self.profile.name,
                "profile_digest": self.profile.digest(), "hparams": {k: str(v) for k, v in self.hparams.items()}}

    def train_config(self, overrides: dict | None = None):
        """The profile's MicroCrystalNet training protocol with a trial's overrides."""
        from mcn.train import TrainConfig

        kwargs = {**self.profile.train_kwargs(CNN), **(overrides or {})}
        return TrainConfig(**kwargs, seed=self.seed, progress=False)

    def model_hparams(self, overrides: dict | None = None) -> dict:
        """The profile's MicroCrystalNet hyper-parameters, then `--hparam`, then a trial's overrides."""
        return {**self.profile.model_hparams(CNN), **self.hparams, **(overrides or {})}

    def handcrafted(self) -> np.ndarray:
        """Handcrafted features of every crystal (measured once per study)."""
        if self._handcrafted is None:
            from features.handcrafted import handcrafted_features

            self._handcrafted = handcrafted_features(self.dataset, self.size_features,
                                                     self.n_jobs).to_numpy(np.float64)
        return self._handcrafted

    def embedding_dir(self) -> Path:
        """Where the embedding CNN's folds are kept: one folder per data set, folds and settings."""
        import keras

        from mcn.data.splits import folds_hash
        from mcn.train import run_hash

        key = run_hash(CNN, self.train_config(), self.model_hparams(), keras.backend.backend())
        return self.root / "embeddings" / f"{self.dataset.name}-{len(self.folds)}fold-{folds_hash(self.folds)}-{key}"

    def fold_embeddings(self) -> dict[int, np.ndarray]:
        """Fold k's MicroCrystalNet embeddings of every crystal; trained once, resumed from disk."""
        if self._embeddings is None:
            from mcn.train import cross_validate

            results = cross_validate(CNN, self.dataset, self.folds, self.train_config(), self.model_hparams(),
                                     self.embedding_dir(), progress=True)
            self._embeddings = {r.fold: r.embeddings for r in results}
        return self._embeddings

    def features(self, feature_set: str) -> Callable[[Fold], np.ndarray]:
        """`fold -> feature matrix of every crystal` for a classical model (computed up front)."""
        from features.embeddings import fold_features

        handcrafted = self.handcrafted() if feature_set in ("handcrafted", "hybrid") else None
        embeddings = self.fold_embeddings() if feature_set in ("embedding", "hybrid") else None
        return fold_features(feature_set, handcrafted, embeddings)


def score_cnn(trial: optuna.Trial, data: StudyData, train_overrides: dict, hparam_overrides: dict,
              folds: list[Fold], prune: bool = True) -> list[dict]:
    """Train MicroCrystalNet on each of `folds` with the trial's settings; the fold metrics."""
    from mcn.train import train_fold

    config, hparams = data.train_config(train_overrides), data.model_hparams(hparam_overrides)
    done: list[dict] = []
    for fold in folds:
        result = train_fold(CNN, data.dataset, fold, config, hparams)
        _record(trial, fold.index, result.metrics, done, prune and fold is not folds[-1])
    return done


def score_classifier(trial: optuna.Trial, data: StudyData, name: str, feature_set: str, params: dict,
                     folds: list[Fold], prune: bool = True) -> list[dict]:
    """Fit the classifier `name` on each of `folds` with the trial's parameters; fold metrics."""
    from features.crossval import cross_validate_classifier

    features = data.features(feature_set)
    done: list[dict] = []
    for fold in folds:
        result = cross_validate_classifier(name, features, data.dataset.labels, [fold], data.dataset.class_names,
                                           data.seed, **params)[0]
        _record(trial, fold.index, result["metrics"], done, prune and fold is not folds[-1])
    return done


def _record(trial: optuna.Trial, fold: int, metrics: dict, done: list[dict], prune: bool) -> None:
    """Keep one fold's metrics, log them, report the running mean, and prune if the pruner says so.

    The last fold is never pruned: the trial's cost is spent by then, and its full score is worth keeping.
    """
    done.append({k: float(metrics[k]) for k in SUMMARY_METRICS})
    trial.set_user_attr("fold_metrics", done)
    tracking.log_metrics({f"fold_{k}": v for k, v in done[-1].items()}, step=fold)
    running = float(np.mean([m[OBJECTIVE] for m in done]))
    trial.report(running, step=fold)
    if prune and trial.should_prune():
        tracking.log_metrics(summarize(done))
        raise optuna.TrialPruned(f"mean {OBJECTIVE} {running:.3f} after {len(done)} fold(s)")


def finish(trial: optuna.Trial, fold_metrics: list[dict]) -> float:
    """Log the fold mean and std of every metric; the objective value (mean macro-F1)."""
    summary = summarize(fold_metrics)
    tracking.log_metrics(summary)
    for key in (OBJECTIVE, f"{OBJECTIVE}_std", "top1", "top1_std"):
        trial.set_user_attr(key, summary.get(key, float("nan")))
    return summary[OBJECTIVE]


def search_objective(model: str, feature_set: str | None, space: dict, data: "StudyData", folds: list,
                     tags: dict, on_start: Callable[[], None] = lambda: None) -> Callable[[optuna.Trial], float]:
    """A search's objective: suggest from `space`, score on `folds` in a nested MLflow run, return
    the mean. `on_start` runs first (a worker's budget lock is released once its trial is RUNNING)."""
    def objective(trial: optuna.Trial) -> float:
        on_start()
        values = spaces.suggest(trial, space)
        with runs.trial_run(trial, tags, values):
            if feature_set is None:
                train, hparams = spaces.split_params(values)
                scores = score_cnn(trial, data, train, hparams, folds)
            else:
                scores = score_classifier(trial, data, model, feature_set, values, folds)
            return finish(trial, scores)

    return objective
