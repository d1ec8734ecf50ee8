"""Atomic writes: a result file is either the old one or the complete new one, never half written.

Every output of the suite (tables, figures, fold results, checkpoints) goes through `atomic_path`, so
an interrupted run never leaves a truncated file that a resumed run would trust.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that infer the format still work),
    moved onto `path` when the block succeeds and removed when it fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(figure, path: str | Path, dpi: int = 120, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (its folder created) and close it."""
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, **savefig_kwargs)
    plt.close(figure)
    return Path(path)
