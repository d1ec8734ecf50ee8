"""Which code and which packages produced a result: one list, read by `python -m mcn --version`
and by the MLflow tags that let a run be reproduced on its own."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import mcn

KEY_PACKAGES = ("keras", "numpy", "scipy", "scikit-learn", "scikit-image", "xgboost", "optuna", "mlflow",
                "pandas", "torch")
"""The packages whose version can change a result, whatever the Keras backend (torch runs SAM too)."""

BACKEND_PACKAGES = {"torch": ("torch",), "tensorflow": ("tensorflow-cpu", "tensorflow"), "jax": ("jax", "jaxlib")}
"""The distributions behind each Keras backend (TensorFlow ships as tensorflow-cpu or tensorflow)."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe` of the suite's checkout (with `-dirty`), else the package version.

    Only a checkout of the suite itself is asked: an installed copy in a virtual environment that
    happens to lie inside some other git repository must not report that repository.
    """
    root = Path(mcn.__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return f"mcn-{mcn.__version__}"


@lru_cache(maxsize=4)
def package_versions(backend: str | None = None) -> dict[str, str]:
    """Installed versions of the key packages and of `backend`'s (those not installed are left out)."""
    versions = {}
    for name in (*KEY_PACKAGES, *BACKEND_PACKAGES.get(backend or "", ())):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
