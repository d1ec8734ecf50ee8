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
import re
import subprocess
import time
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
"""Relative to the current directory: `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`."""

EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3's UI opens untagged experiments in its GenAI view; this tag opens them as model training."""

_PACKAGES = ("keras", "numpy", "scikit-learn", "scipy", "xgboost", "mlflow", "pandas")
_BACKEND_PACKAGES = {"torch": ("torch",), "tensorflow": ("tensorflow-cpu", "tensorflow"), "jax": ("jax", "jaxlib")}


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at `tracking_uri` (default: the suite's sqlite store), creating its folder."""
    import mlflow

    uri = tracking_uri or DEFAULT_TRACKING_URI
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)  # schema-creation chatter on first use
    mlflow.set_tracking_uri(uri)
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def experiment_id(name: str, tracking_uri: str) -> str:
    """Id of the experiment `name`, created on first use with its artifacts beside a sqlite store."""
    import mlflow

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
    return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)


@lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe` of the suite's checkout (with `-dirty`), else the installed package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import mcn

    return f"mcn-{mcn.__version__}"


@lru_cache(maxsize=4)
def package_versions(backend: str | None = None) -> dict[str, str]:
    """Installed versions of the packages a result depends on (the backend's included)."""
    names = [*_PACKAGES, *_BACKEND_PACKAGES.get(backend or "", ())]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_tags(*, backend: str, seed: int, data_fingerprint: str, **extra: object) -> dict[str, str]:
    """The tags that let one result be reproduced on its own: data, seed, code and package versions."""
    tags = {"backend": backend, "seed": str(seed), "data_fingerprint": data_fingerprint,
            "code_version": code_version()}
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


@contextmanager
def start_run(run_name: str, *, experiment: str | None = None, nested: bool = False,
              tags: Mapping[str, str] | None = None, params: Mapping[str, object] | None = None) -> Iterator:
    """An MLflow run (nested under the active one if asked), with tags and flattened params.

    A nested run goes in its parent's experiment (MLflow would otherwise file it under "Default").
    """
    import mlflow

    if experiment is None and mlflow.active_run() is not None:
        experiment = mlflow.active_run().info.experiment_id
    with mlflow.start_run(run_name=run_name, experiment_id=experiment, nested=nested,
                          tags=dict(tags or {})) as run:
        if params:
            mlflow.log_params(flatten_params(params))
        yield run


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
    names = ["keras", "numpy", *_BACKEND_PACKAGES.get(backend, ())]
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
