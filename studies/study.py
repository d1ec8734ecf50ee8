"""What every study shares: persistent, resumable Optuna storage and the files a study leaves.

Storage is any Optuna RDB URL (a SQLite file by default), opened with `load_if_exists`, so a study
interrupted at trial 7 resumes at trial 8 and several machines can work on one study. The sampler's
seed is offset by the trials already stored, so a resumed seeded study does not replay the
suggestions it already tried.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import optuna  # noqa: E402

from mcn.files import save_figure, write_text  # noqa: E402

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
"""Relative to the current directory: `optuna-dashboard sqlite:///mlruns/optuna.db`."""

TARGET_NAME = "mean macro-F1 over CV folds"
SELECTION_NOTE = ("value: mean macro-F1 over search splits inside the training parts of the grouped CV folds; it "
                  "selected these parameters, so it "
                  "is an optimistic estimate: confirm with benchmarks.run under another seed")


class StudyError(ValueError):
    """A study cannot be opened or run as asked; the message says why in one line."""


def open_study(name: str, storage: str = DEFAULT_STORAGE, seed: int = 0,
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create or resume the study `name` (maximising) in `storage`.

    Only the default store's folder (mlruns/) is created; a user's SQLite path must lie in an
    existing folder, so a typo fails here instead of scattering databases.
    """
    _check_sqlite_folder(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is printed by the caller
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    load_if_exists=True, pruner=pruner or optuna.pruners.MedianPruner(
                                        n_startup_trials=3, n_warmup_steps=1))
    except Exception as exc:  # optuna and SQLAlchemy raise many types for a bad URL
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StudyError(f"cannot open Optuna storage {storage!r}: {reason}") from exc
    study.sampler = sampler or optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def _check_sqlite_folder(storage: str) -> None:
    if not storage.startswith("sqlite:///"):
        return
    folder = Path(storage.removeprefix("sqlite:///")).parent
    if storage == DEFAULT_STORAGE:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise StudyError(f"cannot open Optuna storage {storage!r}: folder {folder} does not exist")


def claim(study: optuna.Study, config: dict) -> None:
    """Tie the study to one data set, fold split, seed and profile; refuse to resume it under others.

    Trials of one study must score on the same folds, else their values are not comparable.
    """
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", config)
        return
    changed = [k for k in config if stored.get(k) != config[k]]
    if changed:
        detail = ", ".join(f"{k} {stored.get(k)!r} -> {config[k]!r}" for k in changed)
        raise StudyError(f"study {study.study_name!r} was made with other settings ({detail}); "
                         "pass another --study-name or the original settings")


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that ran to the end (pruned and failed ones excluded)."""
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def spent_trials(study: optuna.Study) -> int:
    """Trials that count against a `--trials` budget: completed and pruned ones."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in states for t in study.trials)


def write_study_outputs(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Best parameters (JSON), all trials (CSV), optimisation history and parameter importances (PNG)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    done = finished_trials(study)
    trials_csv = out_dir / "trials.csv"
    write_text(trials_csv, study.trials_dataframe().to_csv(index=False))
    written.append(trials_csv)
    if not done:
        return written
    best = study.best_trial
    best_json = out_dir / "best_params.json"
    record = {"study": study.study_name, "trial": best.number, "value": best.value, "params": best.params,
              "note": SELECTION_NOTE, "config": study.user_attrs.get("config"), "user_attrs": best.user_attrs}
    write_text(best_json, json.dumps(record, indent=2))
    written.append(best_json)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=TARGET_NAME)
    written.append(_save_plot(ax, out_dir / "optimization_history.png"))
    varied = {name for t in done for name in t.params if len({str(u.params.get(name)) for u in done}) > 1}
    if len(done) >= 2 and varied:
        ax = optuna.visualization.matplotlib.plot_param_importances(study, target_name=TARGET_NAME)
        written.append(_save_plot(ax, out_dir / "param_importances.png"))
    return written


def _save_plot(ax, path: Path) -> Path:
    """Save an Optuna matplotlib plot at a readable size (atomically, like every output)."""
    ax.figure.set_size_inches(8, 5)
    ax.figure.tight_layout()
    return save_figure(ax.figure, path)
