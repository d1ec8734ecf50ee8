"""What every study shares: persistent, resumable Optuna storage and the files a study leaves.

Storage is any Optuna RDB URL (a SQLite file by default), opened with `load_if_exists`, so a study
interrupted at trial 7 resumes at trial 8 and several machines can work on one study. The sampler's
seed is offset by the trials already stored, so a resumed seeded study does not replay the
suggestions it already tried.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"


class StudyError(ValueError):
    """A study cannot be opened or run as asked; the message says why in one line."""


def open_study(name: str, storage: str = DEFAULT_STORAGE, seed: int = 0,
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create or resume the study `name` (maximising) in `storage`."""
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    load_if_exists=True, pruner=pruner or optuna.pruners.MedianPruner(
                                        n_startup_trials=3, n_warmup_steps=1))
    except Exception as exc:  # optuna and SQLAlchemy raise many types for a bad URL
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StudyError(f"cannot open Optuna storage {storage!r}: {reason}") from exc
    study.sampler = sampler or optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def write_study_outputs(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Best parameters (JSON), all trials (CSV), optimisation history and parameter importances (PNG)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    done = finished_trials(study)
    trials_csv = out_dir / "trials.csv"
    _atomic_write(trials_csv, study.trials_dataframe().to_csv(index=False))
    written.append(trials_csv)
    if not done:
        return written
    best = study.best_trial
    best_json = out_dir / "best_params.json"
    _atomic_write(best_json, json.dumps({"study": study.study_name, "trial": best.number, "value": best.value,
                                         "params": best.params, "user_attrs": best.user_attrs}, indent=2))
    written.append(best_json)
    ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    written.append(_save(ax.figure, out_dir / "optimization_history.png"))
    varied = {name for t in done for name in t.params if len({str(u.params.get(name)) for u in done}) > 1}
    if len(done) >= 2 and len(varied) >= 2:
        ax = optuna.visualization.matplotlib.plot_param_importances(study)
        written.append(_save(ax.figure, out_dir / "param_importances.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    os.replace(tmp, path)
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
