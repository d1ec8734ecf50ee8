"""`python -m benchmarks.run`: every model on the same grouped folds, tracked in MLflow, one table.

MicroCrystalNet and the five baseline CNNs train through `mcn.train.cross_validate`; the classical
zoo (`features.zoo`) fits on handcrafted features, on the CNN embeddings of each fold's own
MicroCrystalNet (trained on that fold's training part only), and on both. All share the folds of
`mcn.data.splits.make_folds(dataset, folds, seed)` and the metric function of `mcn.metrics`.

Interruption-safe: CNN folds are saved in `mcn.train`'s fold folders, classical folds as JSON, and a
model's result as results/<model>.json once all its folds are done; rerunning the same command
loads what is there (and says so) instead of recomputing. `config.json` ties an output folder to
one data fingerprint, profile, seed and fold count, so a different configuration never reuses
stale results. A model that fails records its error, the run goes on, and the exit code says so.

Three parts, one job each: `Benchmark` computes (folds, result files, the comparison) and returns
data; `MlflowLog` records it in MLflow through `mcn.experiment.tracking`; `Console` prints. `run`
drives the three.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

import mcn
from mcn import cli
from mcn.experiment import profiles
from mcn.experiment.stats import summarize
from benchmarks import results as results_io
from mcn.experiment.comparison import compare, protocol_text
from mcn.metrics import METRICS_VERSION
from mcn.errors import DataError, exit_interrupted
from mcn.experiment.tracking import StoreError
from mcn import checks
from mcn.files import remove_own



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark MicroCrystalNet, the baseline CNNs and classical models (handcrafted, CNN-"
                    "embedding and hybrid features) on the same grouped folds; log to MLflow; print a "
                    "comparison table with significance tests.")
    cli.data(p)
    cli.pixel_size_nm(p, default_text="images.csv, then the image's metadata; this flag wins over both")
    cli.models(p, default_text="the profile's models")
    cli.folds(p)
    cli.group_by(p)
    p.add_argument("--repeats", type=int, default=1,
                   help="repeated grouped CV, each repeat with its own fold seed (default: %(default)s)")
    cli.seed(p)
    cli.profile(p)
    cli.backend(p)
    cli.size_features(p)
    p.add_argument("--crossfit", type=int, metavar="K",
                   help="embedding and hybrid rows: embed each fold's training crystals by CNNs trained on K-1 "
                        "of K inner grouped folds of its training part (0, the default: off; measured harmful "
                        "with raw embeddings, whose axes differ between CNNs: see benchmarks/results/crossfit)")
    p.add_argument("--params", type=Path, action="append", default=[], metavar="FILE",
                   help="best_params.json of a study (studies.hpo): its model with those parameters runs as its "
                        "own row, named '<model> tuned'; repeatable")
    p.add_argument("--embedding-model", default="microcrystalnet",
                   help="CNN whose per-fold embeddings feed the classical models (default: %(default)s)")
    cli.rank_metric(p)
    cli.rope(p)
    cli.out(p, type=Path, default_text="mlruns/benchmark/<data set>-<profile>-seed<seed>")
    cli.tracking_uri(p)
    cli.overwrite(p)
    cli.jobs(p)
    p.add_argument("--cluster", metavar="local:N|tcp://HOST:PORT",
                   help="run the model x fold grid on Dask distributed: local:N starts N local worker "
                        "processes, tcp://HOST:8786 uses a running scheduler whose workers see --data and "
                        "--out at the same paths (pip install -e \".[dask]\")")
    cli.quiet(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keras and mlflow import tensorflow if present
    console = Console(args)
    try:
        mcn.select_backend(args.backend)  # before anything imports keras
        bench = Benchmark.setup(args, notify=console.note)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        exit_interrupted("before any model ran; nothing to resume")
    try:
        failed = run(bench, console)
    except StoreError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        exit_interrupted(bench.saved_line())
    if failed:
        sys.exit(f"error: {len(failed)} model(s) failed: " + "; ".join(f"{m} ({e})" for m, e in failed.items()))


def run(bench: "Benchmark", console: "Console") -> dict[str, str]:
    """Run (or load) every model of `bench`, log each to MLflow, write the table and report it on
    `console`; the failed models and their errors."""
    from mcn.experiment.report import write_tables

    start = time.perf_counter()
    if bench.args.cluster:
        from benchmarks.cluster import run_grid

        failed = run_grid(bench)
        if failed:
            console.note(f"cluster: {failed} fold(s) failed there; computing them here")
    log = MlflowLog(bench, console.note)
    with log.benchmark_run():
        for model in console.progress(bench.models, desc="models", unit="model"):
            with log.during(model):
                result = bench.run_model(model)
            log.model(result)
        try:
            comparison = bench.comparison()
        except ValueError as exc:
            comparison = None
            console.note(f"no comparison table: {exc}")
        else:
            paths = write_tables(comparison, bench.out)
            log.comparison(comparison, paths)
            console.table(comparison, paths)
    console.summary(bench, time.perf_counter() - start, comparison)
    return bench.failed


def _default_profile(args: argparse.Namespace) -> tuple[profiles.Profile, str]:
    if args.profile:
        return profiles.get_profile(args.profile), "chosen with --profile"
    profile, reason = profiles.default_profile(args.backend)
    if profile is profiles.PAPER and args.backend != "jax":
        reason += "; --backend jax is the fastest Keras backend on a GPU"
    return profile, reason


def _silent(message: str) -> None:
    """Where a `Benchmark` made without a console sends its notes: nowhere."""


@dataclass
class Benchmark:
    """One invocation: data, folds, profile, output folder and the models to run. It computes the
    results (fold records, result files, the comparison) and returns them; it prints and logs
    nothing itself: its notes go to `notify`, MLflow is `MlflowLog`'s, the console `Console`'s."""

    args: argparse.Namespace
    dataset: object
    folds: list
    profile: profiles.Profile
    models: list[str]
    out: Path
    config: dict
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    tuned: dict[str, tuple[str, dict]] = field(default_factory=dict)
    notify: Callable[[str], None] = _silent
    _handcrafted: tuple[np.ndarray, float] | None = None
    _embeddings: list | None = None
    _crossfit: dict | None = None

    @classmethod
    def setup(cls, args: argparse.Namespace, notify: Callable[[str], None] = _silent) -> "Benchmark":
        """Check everything a run needs before any training: data, folds, models, output folder.
        What it chose and why goes to `notify`, as do the notes of the run itself."""
        from features.handcrafted import resolve_size_features
        from mcn.data.load import load_dataset
        from mcn.data.splits import describe_grouping, make_folds, resolve_grouping
        from mcn.models import list_models

        if args.rope < 0:
            raise ValueError(f"--rope must be >= 0; got {args.rope}")
        profile, reason = _default_profile(args)
        notify(f"profile: {profile.name} ({reason}): {profile.description}")
        if args.embedding_model not in list_models():
            raise ValueError(f"unknown --embedding-model {args.embedding_model!r}; choose from "
                             f"{', '.join(list_models())}")
        if args.data is not None and not Path(args.data).exists():
            raise DataError(f"{args.data}: no such data set folder")
        _check_flags(args)
        models = profiles.resolve_models(args.models, profile)
        tuned = {f"{base} tuned": (base, params) for base, params in map(_tuned, args.params)}
        models += [m for m in tuned if m not in models]
        dataset = load_dataset(args.data, pixel_size_nm=args.pixel_size_nm)
        if len(dataset) == 0:
            raise DataError(f"{args.data or dataset.root}: the data set holds no crystals")
        if len(np.unique(dataset.labels)) < 2:
            raise DataError(f"{args.data or dataset.root}: every crystal is of one class "
                            f"({dataset.class_counts()}); a classifier needs two classes at least")
        group_by, why = resolve_grouping(dataset, args.folds, args.group_by)
        notify(f"folds: {describe_grouping(group_by)} ({why})")
        folds = make_folds(dataset, n_splits=args.folds, seed=args.seed, group_by=group_by, repeats=args.repeats)
        size_features, why = resolve_size_features(dataset, args.size_features)
        notify(f"size features: {size_features} ({why})")
        bases = [tuned.get(m, (m,))[0] for m in models]
        if args.embedding_model not in models and any(m.endswith((":embedding", ":hybrid")) for m in bases):
            notify(f"models: adding {args.embedding_model}: its fold models make the embedding features")
            models.insert(0, args.embedding_model)
        out = args.out or Path("mlruns") / "benchmark" / f"{dataset.name}-{profile.name}-seed{args.seed}"
        config = {"data_fingerprint": dataset.fingerprint(), "data_name": dataset.name,
                  "profile": profile.name, "profile_digest": profile.digest(), "seed": args.seed,
                  "folds": args.folds, "group_by": group_by, "repeats": args.repeats, "size_features": size_features,
                  "metrics_version": METRICS_VERSION, "embedding_model": args.embedding_model,
                  "backend": args.backend}
        crossfit = profile.crossfit if args.crossfit is None else args.crossfit
        if crossfit < 0 or crossfit == 1:
            raise ValueError(f"--crossfit must be 0 (off) or >= 2 inner folds; got {crossfit}")
        config["crossfit"] = crossfit
        if tuned:
            config["tuned"] = {name: params for name, (_, params) in tuned.items()}
        _claim(out, config, args.overwrite, notify)
        notify(f"data: {dataset.name} ({len(dataset)} crystals {dataset.class_counts()}, fingerprint "
              f"{config['data_fingerprint']}); {args.folds} folds {describe_grouping(group_by)} x {args.repeats} "
              f"repeat(s), seed {args.seed}; "
              f"{len(models)} models on {args.backend}; results in {out}")
        return cls(args, dataset, folds, profile, models, out, config, tuned=tuned, notify=notify)

    # ---- computing ---------------------------------------------------------------------------

    def saved_line(self) -> str:
        """What an interrupted run leaves: finished models, and how to resume."""
        done = sum(bool(r) and not r.get("error") for r in (results_io.load_result(self.out, m) for m in self.models))
        return (f"{done} of {len(self.models)} model(s) finished and saved in {self.out} (finished folds of the "
                "others too); rerun the same command to resume")

    def run_model(self, model: str) -> dict:
        """One model's result: loaded when all its folds are done, else computed and saved; a
        failure is recorded in the result (and in `failed`), never raised."""
        stored = results_io.load_result(self.out, model)
        if stored and not stored.get("error"):
            self.notify(f"{model}: all folds done earlier, loaded from {results_io.result_path(self.out, model)}")
            self.reused.append(model)
            return stored
        started = time.perf_counter()
        try:
            result = self._cnn(model) if ":" not in self._base(model)[0] else self._classical(model)
        except Exception as exc:  # noqa: BLE001 - one failing model must not stop the benchmark
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.notify(f"{model}: FAILED: {message}")
            (self.out / "errors").mkdir(parents=True, exist_ok=True)
            (self.out / "errors" / f"{results_io.slug(model)}.txt").write_text(traceback.format_exc())
            result = {**self._identity(model), "folds": [], "error": message}
        result["seconds"] = time.perf_counter() - started
        results_io.save_result(self.out, result)
        if result.get("error"):
            self.failed[model] = result["error"]
        return result

    def _base(self, model: str) -> tuple[str, dict]:
        """The registry model behind a row name, and its parameters (a tuned row's, else none)."""
        return self.tuned.get(model, (model, {}))

    def _identity(self, model: str) -> dict:
        clf, _, fs = self._base(model)[0].partition(":")
        return {"model": model, "family": "classical" if fs else "cnn", "feature_set": fs or "image",
                "classifier": clf if fs else None, "class_names": list(self.dataset.class_names),
                "backend": self.args.backend, "profile": self.profile.name, "seed": self.args.seed,
                "error": None}

    def _cnn_results(self, model: str) -> list:
        """Fold results of a CNN: trained, or loaded from its fold folders by `mcn.train`."""
        from mcn.train import TrainConfig, cross_validate

        config = TrainConfig(**self.profile.train_kwargs(model), seed=self.args.seed)
        return cross_validate(model, self.dataset, self.folds, config, self.profile.model_hparams(model),
                              self.out / "cnn" / model, progress=not self.args.quiet)

    def _cnn(self, model: str) -> dict:
        from mcn.evaluate import write_figures

        folder = self.out / "cnn" / model
        before = sum((folder / f"fold_{f.index}").is_dir() for f in self.folds)
        fold_results = self._cnn_results(model)
        (self.reused if before == len(self.folds) else self.trained).append(model)
        if model == self.args.embedding_model:
            self._embeddings = fold_results
        figures = write_figures(fold_results, self.dataset, folder / "figures", progress=not self.args.quiet)
        first = fold_results[0]
        n = len(self.dataset)
        return {
            **self._identity(model), "n_params": first.n_params, "flops": first.flops,
            "input_size": first.input_size, "hparams": first.hparams, "train_config": first.config,
            "figures": sorted(str(p) for p in figures),
            "folds": [{"fold": r.fold, "metrics": r.metrics, "n_test": len(r.test_index),
                       "n_train": n - len(r.test_index), "fit_seconds": r.train_seconds,
                       "inference_seconds_per_crystal": r.inference_seconds_per_crystal,
                       "epochs_run": r.epochs_run, "best_epoch": r.best_epoch,
                       "seconds_per_epoch": r.seconds_per_epoch, "history": r.history,
                       "model_path": results_io.relative_to_record(self.out, model, r.model_path)}
                      for r in fold_results],
        }

    def _embedding_folds(self) -> list:
        """The embedding CNN's fold results (trained or loaded once), for embedding features."""
        model = self.args.embedding_model
        if model in self.failed:
            raise RuntimeError(f"embedding model {model} failed: {self.failed[model]}")
        if self._embeddings is None:
            self.notify(f"embeddings: loading {model}'s fold models")
            self._embeddings = self._cnn_results(model)
        return self._embeddings

    def _handcrafted_features(self) -> tuple[np.ndarray, float]:
        """Handcrafted features of every crystal (computed once) and their seconds per crystal."""
        if self._handcrafted is None:
            from features.handcrafted import handcrafted_features

            start = time.perf_counter()
            table = handcrafted_features(self.dataset, self.config["size_features"], n_jobs=self.args.jobs)
            self._handcrafted = table.to_numpy(np.float64), (time.perf_counter() - start) / len(self.dataset)
        return self._handcrafted

    def _fold_features(self, feature_set: str):
        """`fold -> features of every crystal` and the extraction cost per crystal of each fold."""
        from features.embeddings import fold_features

        handcrafted, embeddings = None, None
        cost = {f.index: 0.0 for f in self.folds}
        if feature_set != "embedding":
            handcrafted, seconds = self._handcrafted_features()
            cost = {k: v + seconds for k, v in cost.items()}
        if feature_set != "handcrafted":
            cnn = self._embedding_folds()
            embeddings = {r.fold: r.embeddings for r in cnn}
            cost = {r.fold: cost[r.fold] + r.inference_seconds_per_crystal for r in cnn}
            if self.config["crossfit"]:
                from features.crossfit import crossfit_features

                return crossfit_features(feature_set, handcrafted, embeddings, self._out_of_fold()), cost
        return fold_features(feature_set, handcrafted, embeddings), cost

    def _out_of_fold(self) -> dict[int, np.ndarray]:
        """Per outer fold: out-of-fold embeddings of its training part from CNNs of its inner folds
        (trained once, kept under cnn/<model>/crossfit/fold_<k>/ and resumed)."""
        if self._crossfit is None:
            from features.crossfit import out_of_fold_embeddings
            from mcn.data.splits import inner_folds
            from mcn.train import TrainConfig, cross_validate

            model, k = self.args.embedding_model, self.config["crossfit"]
            config = TrainConfig(**self.profile.train_kwargs(model), seed=self.args.seed)
            self._crossfit = {}
            for fold in tqdm(self.folds, desc=f"cross-fitting {model}", unit="fold", disable=self.args.quiet):
                inner = inner_folds(self.dataset, fold, k, self.args.seed + 1 + fold.index, self.config["group_by"])
                results = cross_validate(model, self.dataset, inner, config, self.profile.model_hparams(model),
                                         self.out / "cnn" / model / "crossfit" / f"fold_{fold.index}",
                                         progress=not self.args.quiet)
                self._crossfit[fold.index] = out_of_fold_embeddings(results, len(self.dataset))
        return self._crossfit

    def _classical(self, model: str) -> dict:
        """Fit and score one classifier on one feature set, fold by fold (stored folds are loaded)."""
        base, params = self._base(model)
        clf, _, feature_set = base.partition(":")
        folder = self.out / "classical" / results_io.slug(model)
        paths = {f.index: results_io.classical_fold_path(self.out, model, f.index) for f in self.folds}
        records = {k: results_io.read_json(p) for k, p in paths.items() if p.is_file()}
        if records:
            self.notify(f"{model}: {len(records)} fold(s) loaded from {folder} (not refitted)")
        todo = [f for f in self.folds if f.index not in records]
        (self.trained if todo else self.reused).append(model)
        if todo:
            x_for_fold, cost = self._fold_features(feature_set)
            records.update(fit_classical_folds(clf, x_for_fold, self.dataset.labels, todo, self.dataset.class_names,
                                               self.args.seed, self.args.jobs, cost, paths, params))
        folds = [records[f.index] for f in self.folds]
        figures = self._classical_figures(folds, folder)
        slim = [{k: v for k, v in f.items() if k not in ("test_index", "probabilities")} for f in folds]
        return {**self._identity(model), "n_params": None, "flops": None,
                "n_features": folds[0]["n_features"], "figures": figures, "folds": slim}

    def _classical_figures(self, folds: list[dict], folder: Path) -> list[str]:
        """Confusion matrix, PR and ROC curves of the pooled out-of-fold predictions."""
        from mcn.evaluate import plot_confusion, plot_pr_curves, plot_roc_curves

        index = np.concatenate([f["test_index"] for f in folds]).astype(int)
        proba = np.concatenate([np.asarray(f["probabilities"], float) for f in folds])
        y, names, figures = self.dataset.labels[index], self.dataset.class_names, folder / "figures"
        return [str(plot(y, proba, names, figures / f"{name}.png")) for plot, name in
                ((plot_confusion, "confusion_matrix"), (plot_pr_curves, "precision_recall"),
                 (plot_roc_curves, "roc"))]

    def comparison(self):
        """The comparison of this invocation's models from their stored results (ValueError: none)."""
        stored = [r for r in results_io.load_results(self.out) if r["model"] in self.models]
        return compare(stored, self.args.rank_metric, self.args.rope, protocol_text(self.config))


class MlflowLog:
    """A benchmark's MLflow record, through `mcn.experiment.tracking`: a parent run per invocation,
    a child run per model (fold mean and std), a nested run per fold (CNN epoch curves), the best
    fold's Keras model and the comparison table. Tracking trouble is noted, never loses results."""

    def __init__(self, bench: Benchmark, notify: Callable[[str], None] = _silent):
        from mcn.experiment import tracking

        self.bench, self.notify, self.tracking = bench, notify, tracking
        self.uri = tracking.configure(bench.args.tracking_uri)
        self.during = tracking.during

    def benchmark_run(self):
        """The parent run of this invocation (a context manager); dead runs of this machine closed first."""
        bench, tracking = self.bench, self.tracking
        experiment = tracking.experiment_id(bench.dataset.name, self.uri)
        if tracking.close_dead_runs(experiment):
            self.notify("MLflow: runs left RUNNING by a killed benchmark of this machine marked KILLED")
        params = {**vars(bench.args), **bench.config, "models": ",".join(bench.models)}
        return tracking.start_run(f"benchmark {bench.profile.name} seed{bench.args.seed}", experiment=experiment,
                                  tags=self._tags(family="benchmark"), params=params)

    def _tags(self, **extra) -> dict[str, str]:
        bench = self.bench
        return self.tracking.run_tags(backend=bench.args.backend, seed=bench.args.seed,
                                      data_fingerprint=bench.config["data_fingerprint"], profile=bench.profile.name,
                                      data_name=bench.dataset.name, folds=bench.args.folds,
                                      group_by=bench.config["group_by"], repeats=bench.args.repeats, **extra)

    def model(self, result: dict) -> None:
        """A child run per model (fold mean and std), a nested run per fold (CNN epoch curves)."""
        tracking, args = self.tracking, self.bench.args
        tags = self._tags(family=result["family"], feature_set=result["feature_set"],
                          model=result["model"], classifier=result.get("classifier"),
                          embedding_model=args.embedding_model if result["family"] == "classical" else None)
        params = {"family": result["family"], "feature_set": result["feature_set"], "model": result["model"],
                  **{k: result[k] for k in ("classifier", "input_size", "hparams", "train_config", "n_features")
                     if result.get(k)}}
        if result.get("classifier"):
            from features.zoo import classifier_params

            params["estimator"] = classifier_params(result["classifier"], args.seed)
        try:
            with tracking.start_run(result["model"], nested=True, tags=tags, params=params):
                if result.get("error"):
                    import mlflow

                    mlflow.set_tag("error", result["error"][:5000])
                    return
                folds = result["folds"]
                tracking.log_metrics({
                    **summarize([f["metrics"] for f in folds]),
                    "fit_seconds": float(np.mean([f["fit_seconds"] for f in folds])),
                    "inference_ms_per_crystal": 1e3 * float(np.mean([f["inference_seconds_per_crystal"]
                                                                     for f in folds])),
                    **({"n_params": result["n_params"]} if result.get("n_params") else {}),
                    **({"flops": result["flops"]} if result.get("flops") else {}),
                })
                for f in folds:
                    with tracking.start_run(f"{result['model']} fold {f['fold']}", nested=True,
                                            tags={**tags, "fold": str(f["fold"])}):
                        tracking.log_metrics({**f["metrics"], "fit_seconds": f["fit_seconds"]})
                        if f.get("history"):
                            tracking.log_history(f["history"])
                tracking.log_artifacts([Path(p) for p in result.get("figures", [])], "figures")
                if result["family"] == "cnn":
                    self._keras_model(result)
        except Exception as exc:  # noqa: BLE001 - tracking trouble must not lose the computed results
            self.notify(f"{result['model']}: MLflow logging failed: {type(exc).__name__}: {exc}")

    def _keras_model(self, result: dict) -> None:
        """Log the best fold's model once per store; a reused result links the earlier copy."""
        import keras
        import mlflow

        import mcn.models  # noqa: F401 - registers MicroCrystalNet's layers for loading

        bench, uri = self.bench, self.uri
        logged = result.setdefault("logged_models", {})
        best = max(result["folds"], key=lambda f: f["metrics"].get(bench.args.rank_metric, -np.inf))
        if uri not in logged or result["model"] in bench.trained:
            path = results_io.resolve_from_record(bench.out, result["model"], best["model_path"])
            if path is None:
                self.notify(f"{result['model']}: fold {best['fold']}'s model file is not in {bench.out}; not logged")
                return
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
            logged[uri] = self.tracking.log_keras_model(model, "model", bench.args.backend)
            results_io.save_result(bench.out, result)
        mlflow.set_tags({"model_uri": logged[uri], "model_fold": str(best["fold"])})

    def comparison(self, comparison, paths: dict[str, Path]) -> None:
        """The comparison's files, and its table as an MLflow table the UI sorts and compares."""
        self.tracking.log_artifacts(list(paths.values()), "comparison")
        self.tracking.log_table(comparison.table, "comparison/comparison_table.json")


class Console:
    """What a benchmark says on the terminal: its notes, the progress bar, the table, the summary."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    @staticmethod
    def note(message: str) -> None:
        tqdm.write(message)

    def progress(self, items, **kwargs):
        return tqdm(items, disable=self.args.quiet, **kwargs)

    def table(self, comparison, paths: dict[str, Path]) -> None:
        from mcn.experiment.report import caption, compact_markdown

        print()
        print(compact_markdown(comparison))
        print()
        print(caption(comparison))
        print("\n".join(comparison.notes))
        print(f"full table: {paths['markdown']} (also .csv, .tex, .png)")

    def summary(self, bench: Benchmark, seconds: float, comparison) -> None:
        minutes, secs = divmod(int(round(seconds)), 60)
        ok = comparison.table[comparison.table["error"] == ""] if comparison is not None else None
        best = ok.iloc[0] if ok is not None and len(ok) else None
        metric = self.args.rank_metric
        print(f"done in {minutes} min {secs} s: {len(set(bench.trained))} model(s) computed, "
              f"{len(set(bench.reused) - set(bench.trained))} loaded from earlier runs, {len(bench.failed)} failed")
        if best is not None:
            print(f"best model by {metric}: {best['model']} ({best[metric]:.3f} ± {best[metric + '_std']:.3f})")
        print(f"MLflow: mlflow ui --backend-store-uri {self.args.tracking_uri or 'sqlite:///mlruns/mlflow.db'}")


def fit_classical_folds(clf: str, x_for_fold, labels: np.ndarray, folds: list, class_names, seed: int, jobs: int,
                        cost: dict[int, float], paths: dict[int, Path], params: dict | None = None) -> dict[int, dict]:
    """Fit classifier `clf` (with `params`, a tuned row's) on `folds` and write each fold's record
    atomically to `paths[fold]`; the records by fold. `cost`: feature seconds per crystal of each fold."""
    from features.crossval import cross_validate_classifier

    fitted = cross_validate_classifier(clf, x_for_fold, labels, folds, class_names, seed, n_jobs=jobs, **(params or {}))
    records = {}
    for fold, r in zip(folds, fitted):
        record = {"fold": fold.index, "n_test": len(fold.test), "n_train": len(labels) - len(fold.test),
                  "n_features": r["n_features"], "fit_seconds": r["fit_seconds"],
                  "inference_seconds_per_crystal": r["predict_seconds"] / len(fold.test) + cost[fold.index],
                  "metrics": r["metrics"], "test_index": fold.test, "probabilities": r["probabilities"]}
        results_io.write_json(paths[fold.index], record)
        records[fold.index] = record
    return records


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse bad flags, an unusable --out and a read-only MLflow store before any data loads."""
    from mcn.experiment import tracking

    checks.seed(args.seed)
    checks.at_least("--folds", args.folds, 2)
    checks.jobs(args.jobs)
    if args.out is not None:
        checks.writable_folder(args.out)
        checks.outside_data(args.out, args.data)
    tracking.check_store(args.tracking_uri)
    if args.cluster:
        from benchmarks.cluster import check_address

        check_address(args.cluster)


def _tuned(path: Path) -> tuple[str, dict]:
    """(CLASSIFIER:FEATURES, parameters) of a study's best_params.json; a bad file is a one-line error."""
    import json

    from features.embeddings import FEATURE_SETS
    from features.zoo import list_classifiers

    try:
        record = json.loads(Path(path).read_text())
        model, feature_set, params = record["config"]["model"], record["config"]["feature_set"], record["params"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--params {path}: not a best_params.json written by studies.hpo ({exc})") from exc
    if model not in list_classifiers() or feature_set not in FEATURE_SETS:
        raise ValueError(f"--params {path}: tuned rows are classical models (CLASSIFIER:FEATURES); this file tunes "
                         f"{model!r}: train a tuned CNN with mcn.train --hparam")
    return f"{model}:{feature_set}", dict(params)


def _claim(out: Path, config: dict, overwrite: bool, notify: Callable[[str], None]) -> None:
    """Make `out` this configuration's folder. A folder without the suite's config.json is refused
    when it holds anything; --overwrite deletes only the suite's own entries (results_io.OWN)."""
    marker = out / results_io.CONFIG_FILE
    checks.writable_folder(out)
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise ValueError(f"{out} is not empty and holds no benchmark {results_io.CONFIG_FILE}; choose another --out")
    if overwrite and marker.is_file():
        removed = remove_own(out, results_io.OWN)
        if removed:
            notify(f"--overwrite: removed {', '.join(p.name for p in removed)} from {out}")
    try:
        results_io.check_config(out, config, overwrite)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc


if __name__ == "__main__":
    main()
