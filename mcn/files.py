"""Atomic writes and careful deletes: a result file is either the old one or the complete new one.

Every output of the suite (tables, figures, fold results, checkpoints) goes through `atomic_path`
or `atomic_dir`, so an interrupted run never leaves a truncated file that a resumed run would trust.
Temporary names are hidden (a leading dot, which every reader of the suite skips) and unique (pid
plus random), so two processes or threads writing one output folder never collide. `remove_own`
is the only way the suite deletes a user-visible path: named entries it wrote, never a whole folder.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_name(path: str | Path, kind: str = "tmp") -> Path:
    """A hidden, unique sibling of `path` with its suffix (writers that infer the format still work)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{kind}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`, moved onto `path` when the block succeeds, removed when it fails."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside `target`, renamed to `target` when the block succeeds.

    An existing `target` is replaced (moved aside, then deleted); when another writer puts its own
    copy in place at the same moment, the last one to finish wins and neither is left half written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-{os.getpid()}-"))
    try:
        yield tmp
        for _ in range(5):
            old = None
            if target.is_dir() and not target.is_symlink():
                old = temp_name(target, "old")
                try:
                    os.rename(target, old)
                except FileNotFoundError:  # another writer moved it first
                    old = None
            try:
                os.rename(tmp, target)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            finally:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        else:
            raise OSError(f"{target}: could not be replaced; other writers keep recreating it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created) for the block; the kernel releases it when the
    process ends, even by SIGKILL, so a crash never leaves a stale lock."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def remove_own(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the entries `names` of `folder` (files, folders; a symlink is unlinked, never followed).

    Callers pass only names the suite itself writes there, so a user's other files are never touched.
    Returns what was removed.
    """
    removed = []
    for name in names:
        path = Path(folder) / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(path)
    return removed
