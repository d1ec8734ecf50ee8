"""The suite's one MLflow helper: store location, experiments, runs, reproducibility tags, models.

Benchmarks and studies both log through here, so every run carries the same metric names (those
of `mcn.metrics.metric_names`: the fold mean under the plain name, the spread as `<name>_std`) and
the same tags (data fingerprint, seed, code and package versions), and MLflow compares them side
by side. The default store is `sqlite:///mlruns/mlflow.db` (MLflow 3 refuses a plain `./mlruns`
file store); artifacts go in a folder beside the database, so a temporary store stays self-contained.
Logging is kept cheap: metrics go in batches, models with explicit pip requirements.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from mcn.files import file_lock
from mcn.versions import BACKEND_PACKAGES, code_version, package_versions

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
"""Relative to the current directory: `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`."""

EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3's UI opens untagged experiments in its GenAI view; this tag opens them as model training."""



class StoreError(ValueError):
    """The MLflow store cannot be used (read-only, unreachable); the message names it in one line."""


def check_store(tracking_uri: str | None = None) -> None:
    """Refuse a SQLite store that cannot be written, before any work is done (mlflow not imported).

    SQLite writes a journal beside the database, so its folder must be writable too.
    """
    uri = tracking_uri or DEFAULT_TRACKING_URI
    db = _sqlite_path(uri)
    if db is None:
        return
    if db.exists() and not db.is_file():
        raise StoreError(f"MLflow store {uri}: {db} is not a file")
    folder = db.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)) or (db.exists() and not os.access(db, os.W_OK)):
        raise StoreError(f"MLflow store {uri}: {db if db.exists() else folder} is read-only")


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at `tracking_uri` (default: the suite's SQLite store) and make sure it is ready.

    A new SQLite store gets its tables on first use; two processes doing that at once corrupt it
    ("table _alembic_tmp_... already exists"), so the first use happens under a lock file beside
    the database (`flock`, released when the process ends, even by SIGKILL). Server and other SQL
    stores create their schema themselves.
    """
    import mlflow

    uri = tracking_uri or DEFAULT_TRACKING_URI
    check_store(uri)
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)  # schema-creation chatter on first use
    mlflow.set_tracking_uri(uri)
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(db.with_name(db.name + ".lock")):
            try:
                mlflow.tracking.MlflowClient(uri).search_experiments(max_results=1)  # creates the tables
            except Exception as exc:  # noqa: BLE001 - SQLAlchemy and MLflow raise many types
                raise StoreError(f"MLflow store {uri}: {str(exc).splitlines()[0] or type(exc).__name__}") from exc
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def experiment_id(name: str, tracking_uri: str) -> str:
    """Id of the experiment `name`, created on first use with its artifacts beside a sqlite store.

    Two processes may create it at the same moment: the loser finds the winner's.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        missing = {k: v for k, v in EXPERIMENT_TAGS.items() if found.tags.get(k) != v}
        for key, value in missing.items():  # experiments made before the tag existed
            mlflow.tracking.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    db = _sqlite_path(tracking_uri)
    location = None
    if db is not None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = (db.parent.resolve() / "artifacts" / slug).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except MlflowException:  # another process created it first
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


HOST_TAG, PID_TAG = "mcn.host", "mcn.pid"
"""Which process owns a run, so a run left RUNNING by a process that died can be told apart."""


def run_tags(*, backend: str, seed: int, data_fingerprint: str, **extra: object) -> dict[str, str]:
    """The tags that let one result be reproduced on its own: data, seed, code and package versions
    (and the process running it)."""
    tags = {"backend": backend, "seed": str(seed), "data_fingerprint": data_fingerprint,
            "code_version": code_version(), HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    tags.update({f"version.{k}": v for k, v in package_versions(backend).items()})
    tags.update({k: str(v) for k, v in extra.items() if v is not None})
    return tags


def flatten_params(params: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted MLflow parameters, values as strings (MLflow's length limit kept)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


END_REASON_TAG = "end_reason"
"""Tag saying why a run ended KILLED or FAILED (which model or trial was interrupted, the error)."""


def close_dead_runs(experiment: str, shared_tag: str | None = None) -> int:
    """Mark KILLED the runs of `experiment` left RUNNING by a process of this machine that no longer
    exists (SIGKILL, out of memory, power cut); returns how many. Other machines' runs are left
    alone, and so are runs tagged `shared_tag` (a study's parent run, which several workers reopen)."""
    import mlflow

    client = mlflow.tracking.MlflowClient()
    host = socket.gethostname()
    runs = mlflow.search_runs([experiment], output_format="list",
                              filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'")
    dead = [r for r in runs if not _alive(int(r.data.tags.get(PID_TAG, "0") or 0))
            and (shared_tag is None or shared_tag not in r.data.tags)]
    for r in dead:
        client.set_tag(r.info.run_id, END_REASON_TAG, f"process {r.data.tags.get(PID_TAG)} on {host} ended "
                                                      "without closing the run (killed)")
        client.set_terminated(r.info.run_id, "KILLED")
    return len(dead)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def start_run(run_name: str, *, experiment: str | None = None, nested: bool = False,
              tags: Mapping[str, str] | None = None, params: Mapping[str, object] | None = None) -> Iterator:
    """An MLflow run (nested under the active one if asked), with tags and flattened params.

    A nested run goes in its parent's experiment (MLflow would otherwise file it under "Default").
    Ctrl-C ends the run KILLED, an error FAILED, each with an `end_reason` tag naming the innermost
    run that was interrupted or the error, so a parent run says which model or trial stopped.
    """
    import mlflow

    if experiment is None and mlflow.active_run() is not None:
        experiment = mlflow.active_run().info.experiment_id
    run = mlflow.start_run(run_name=run_name, experiment_id=experiment, nested=nested, tags=dict(tags or {}))
    with ending(run_name):
        if params:
            mlflow.log_params(flatten_params(params))
        yield run


@contextmanager
def ending(run_name: str) -> Iterator[None]:
    """End the active run when the block ends: FINISHED, or KILLED / FAILED with the reason as a tag."""
    import mlflow

    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except BaseException as exc:
        where = getattr(exc, "mcn_run", None) or run_name
        try:
            exc.mcn_run = where  # an enclosing run names the innermost one too
        except AttributeError:
            pass
        if isinstance(exc, KeyboardInterrupt):
            status = "KILLED"
            _tag_quietly(f"interrupted (Ctrl-C) during {where}")
        else:
            _tag_quietly(f"failed during {where}: " + f"{type(exc).__name__}: {exc}".splitlines()[0][:4000])
        raise
    finally:
        mlflow.end_run(status)


@contextmanager
def during(what: str) -> Iterator[None]:
    """Name a step of the active run (a model, a trial) so that, if it is interrupted or fails
    outside a run of its own, the enclosing run's `end_reason` still says which one it was."""
    try:
        yield
    except BaseException as exc:
        if getattr(exc, "mcn_run", None) is None:
            try:
                exc.mcn_run = what
            except AttributeError:
                pass
        raise


def _tag_quietly(reason: str) -> None:
    """Set the end reason; a store that fails now must not hide the original exception."""
    import mlflow

    try:
        mlflow.set_tag(END_REASON_TAG, reason)
    except Exception:  # noqa: BLE001
        pass


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    """MLflow stores NaN, but the UI sorts and plots only finite numbers: drop the undefined ones."""
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log a flat metric dict on the active run in one batch (undefined values skipped)."""
    import mlflow

    mlflow.log_metrics(_finite(metrics), step=step)


def log_history(history: Mapping[str, list[float]]) -> None:
    """Per-epoch curves (loss, accuracy, learning rate...) as step-indexed metrics, one batch."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(v), now, step) for key, values in history.items()
             for step, v in enumerate(values) if v is not None and math.isfinite(float(v))]
    if batch:
        run_id = mlflow.active_run().info.run_id
        mlflow.tracking.MlflowClient().log_batch(run_id, metrics=batch)


def log_artifacts(paths: list[Path], artifact_path: str | None = None) -> None:
    """Attach existing files to the active run (missing ones are skipped)."""
    import mlflow

    for path in paths:
        if Path(path).is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_table(frame, artifact_file: str) -> None:
    """A table as an MLflow table artifact of the active run (the UI shows, sorts and compares it)."""
    import mlflow

    mlflow.log_table(data=frame.astype(object).where(frame.notna(), None), artifact_file=artifact_file)


def keras_pip_requirements(backend: str) -> list[str]:
    """Pinned requirements to serve a Keras model: stated, because inferring them costs seconds."""
    versions = package_versions(backend)
    names = ["keras", "numpy", *BACKEND_PACKAGES.get(backend, ())]
    return [f"{n}=={versions[n]}" for n in names if n in versions]


def log_keras_model(model, name: str, backend: str) -> str:
    """Log a Keras model on the active run; returns its model URI.

    Loading it back needs `import mcn.models` first (it registers MicroCrystalNet's layers).
    """
    import mlflow.keras
    from mlflow.models import infer_signature

    x = np.zeros((1, *model.input_shape[1:]), np.float32)
    signature = infer_signature(x, np.asarray(model.predict(x, verbose=0)))
    info = mlflow.keras.log_model(model, name=name, signature=signature,
                                  pip_requirements=keras_pip_requirements(backend))
    return info.model_uri
