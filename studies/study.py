"""What every study shares: persistent, resumable Optuna storage and the files a study leaves.

Storage is any Optuna RDB URL (a SQLite file by default, PostgreSQL for several machines), opened
with `load_if_exists`, so a study interrupted at trial 7 resumes at trial 8 and several workers can
work on one study. Workers send a heartbeat; a trial whose worker died (SIGKILL, a lost machine)
is marked FAIL once its heartbeat is older than the grace period, and queued to run again.
Sampling is reproducible per trial: trial n draws from (seed, n), so one worker repeats its
suggestions exactly from `--seed`, and workers running at once never share a random stream
(TPE's constant liar also keeps them off the points other workers are running).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import optuna  # noqa: E402

from mcn.files import file_lock, save_figure, write_text  # noqa: E402

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
"""Relative to the current directory: `optuna-dashboard sqlite:///mlruns/optuna.db`."""

TARGET_NAME = "mean macro-F1 over CV folds"
SELECTION_NOTE = ("value: mean macro-F1 over search splits inside the training parts of the grouped CV folds; it "
                  "selected these parameters, so it "
                  "is an optimistic estimate: confirm with benchmarks.run under another seed")


class StudyError(ValueError):
    """A study cannot be opened or run as asked; the message says why in one line."""


HEARTBEAT_SECONDS = 60
"""How often a worker tells the storage its trial is alive; a trial silent for GRACE_FACTOR times
that is taken as dead (`--heartbeat` changes it)."""
GRACE_FACTOR = 3


class TrialSeededTPESampler(optuna.samplers.TPESampler):
    """TPE whose random draws for trial n come from (seed, n) instead of one stream per process.

    One worker gets the same suggestions from the same seed on every run and on resume; two
    workers seeded alike never replay each other's stream (trial numbers are unique in a study).
    """

    def __init__(self, seed: int = 0, **kwargs) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        state = int(np.random.SeedSequence([self._base_seed, trial.number]).generate_state(1)[0])
        self._rng.rng.seed(state)
        self._random_sampler._rng.rng.seed(state)
        super().before_trial(study, trial)


def storage_for(url: str, heartbeat: int = HEARTBEAT_SECONDS) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a dead worker's trial is failed and queued once more.

    A new SQLite file gets its tables under a lock file beside it (two workers creating them at
    once would collide) and waits for a busy database instead of failing at once; on a database
    server the worker that loses that race retries once the tables exist.
    """
    kwargs = dict(heartbeat_interval=heartbeat, grace_period=GRACE_FACTOR * heartbeat,
                  heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        with file_lock(url.removeprefix("sqlite:///") + ".lock"):
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}, **kwargs)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(2):  # a server database: workers starting together race to create the tables
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, ProgrammingError):  # the loser sees a duplicate key or table
            time.sleep(1 + attempt)
    return optuna.storages.RDBStorage(url, **kwargs)


def open_study(name: str, storage: str = DEFAULT_STORAGE, seed: int = 0,
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None,
               heartbeat: int = HEARTBEAT_SECONDS) -> optuna.Study:
    """Create or resume the study `name` (maximising) in `storage`; fail the trials of dead workers.

    Only the default store's folder (mlruns/) is created; a user's SQLite path must lie in an
    existing folder, so a typo fails here instead of scattering databases.
    """
    _check_sqlite_folder(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is printed by the caller
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        study = optuna.create_study(study_name=name, storage=storage_for(storage, heartbeat), direction="maximize",
                                    load_if_exists=True, sampler=sampler or TrialSeededTPESampler(seed=seed),
                                    pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    except Exception as exc:  # optuna and SQLAlchemy raise many types for a bad URL
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StudyError(f"cannot open Optuna storage {storage!r}: {reason}") from exc
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([TARGET_NAME])  # optuna-dashboard shows it instead of "Objective 0"
    optuna.storages.fail_stale_trials(study)
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


SPENT_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
"""Trials that count against a `--trials` budget; failed ones are run again."""


def spent_trials(study: optuna.Study) -> int:
    """Trials that count against a `--trials` budget: completed and pruned ones."""
    return sum(t.state in SPENT_STATES for t in study.trials)


class TrialBudget:
    """Keeps a study within `n_trials` completed, pruned and running trials across all its workers.

    Counting and starting the next trial must be one step, else two workers that finish together
    both see room for one more and the study gets an extra trial. So the count is taken under a
    lock shared by the workers (a file lock beside a SQLite study, a PostgreSQL advisory lock on a
    server) that is held until the next trial exists: `admit` takes it, the objective calls
    `started` (the trial is RUNNING by then) to release it. Use it as the last Optuna callback.
    """

    def __init__(self, study: optuna.Study, storage: str, n_trials: int) -> None:
        self.study, self.storage, self.n_trials = study, storage, n_trials
        self._handle = self._connection = None

    def admit(self) -> bool:
        """Lock and check for room; True keeps the lock until `started`, False releases it."""
        self._lock()
        states = (*SPENT_STATES, optuna.trial.TrialState.RUNNING)
        if len(self.study.get_trials(deepcopy=False, states=states)) < self.n_trials:
            return True
        self.started()
        return False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.admit():
            study.stop()

    def started(self) -> None:
        """Release the lock (the admitted trial is now RUNNING, or none will start)."""
        if self._handle is not None:
            import fcntl

            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        if self._connection is not None:
            from sqlalchemy import text

            self._connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": self._key()})
            self._connection.close()
            self._connection = None

    def _key(self) -> str:
        return f"mcn-trial-budget:{self.study.study_name}"

    def _lock(self) -> None:
        if self._handle is not None or self._connection is not None:
            return  # held since the last admit (no trial started in between)
        if self.storage.startswith("sqlite:///") and self.storage != "sqlite:///:memory:":
            import fcntl

            self._handle = open(self.storage.removeprefix("sqlite:///") + ".budget.lock", "a")
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        elif self.storage.startswith("postgresql"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(self.storage, poolclass=sqlalchemy.pool.NullPool)
            self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:name))"),
                                     {"name": self._key()})


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
