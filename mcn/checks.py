"""Checks of command-line values made before any data loads or model trains.

Every command (benchmarks.run, studies.*, mcn.train) validates its flags and its output folder
first, so a typo costs a second, not a trained CNN; each failure is one `ValueError` line naming the
flag and the value.
"""

from __future__ import annotations

import os
from pathlib import Path


def at_least(flag: str, value: int | None, minimum: int) -> None:
    """Refuse `flag` below `minimum` (None means "not given" and passes)."""
    if value is not None and value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}; got {value}")


def seed(value: int) -> None:
    """Seeds feed numpy's SeedSequence, which takes non-negative integers only."""
    if value < 0:
        raise ValueError(f"--seed must be an integer >= 0; got {value}")


def jobs(value: int) -> None:
    """A process count: >= 1, or -1 for every CPU (joblib's convention)."""
    if value < 1 and value != -1:
        raise ValueError(f"--jobs must be >= 1 (or -1: every CPU); got {value}")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_folder(path: str | Path, flag: str = "--out") -> None:
    """Refuse an output path that is a file, or a folder (or nearest existing parent) we cannot write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file, not a folder")
    existing = _existing_ancestor(path)
    if not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {existing} is read-only")


def outside_data(out: str | Path, data: str | Path | None, flag: str = "--out") -> None:
    """Refuse an output folder inside the data set: its files would be read as data (a new class of
    a patch folder) or change the data's fingerprint."""
    if data is None:
        return
    out, data = Path(out).resolve(), Path(data).resolve()
    if out == data or out.is_relative_to(data):
        raise ValueError(f"{flag} {out}: lies inside the data set folder {data}; its files would be read "
                         "as data; choose an --out outside it")
