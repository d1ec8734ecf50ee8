"""The tables that come with a data set (crystals.csv, images.csv, manifest.csv) and their labels.

One place for reading a CSV with a clear error, turning class names into indices by one rule, and
reporting skipped rows, so every reader behaves the same.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mcn.data.dataset import DEFAULT_CLASSES
from mcn.errors import DataError


def read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """A CSV table with the `required` columns; id and label columns are read as strings."""
    if not path.is_file():
        raise DataError(f"{path}: not found")
    try:
        table = pd.read_csv(path, dtype={"image_id": str, "sample_id": str, "label": str, "path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                        f"found {', '.join(map(str, table.columns))}")
    return table


def numeric_column(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A float column where empty cells are NaN and anything else non-numeric is refused."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: {column} must be a number (or empty); row {row + 2} has "
                        f"{table[column].iloc[row]!r}")
    return values.astype(float)


def encode_labels(names: Sequence[str], class_names: Sequence[str] | None = None,
                  where: str = "labels") -> tuple[np.ndarray, tuple[str, ...]]:
    """(label index per name, class names).

    Without `class_names`: the default scheme's names present in the data come first in the paper's
    order (RES, PES, AA, RA), any other names follow sorted. With `class_names` its order is kept
    (classes absent from the data included) and a name outside it is refused.
    """
    names = [str(n) for n in names]
    if class_names is None:
        present = set(names)
        order = tuple([c for c in DEFAULT_CLASSES if c in present] + sorted(present - set(DEFAULT_CLASSES)))
    else:
        order = tuple(str(c) for c in class_names)
        unknown = sorted(set(names) - set(order))
        if unknown:
            raise DataError(f"{where}: label(s) {', '.join(map(repr, unknown))} not in class_names {order}")
    index = {c: k for k, c in enumerate(order)}
    return np.array([index[n] for n in names], dtype=np.int64), order


def warn_skipped(where: str | Path, skipped: Counter[str]) -> None:
    """One warning for everything skipped, so a user sees the totals, not a flood."""
    parts = [f"{n} {why}" for why, n in skipped.items() if n]
    if parts:
        warnings.warn(f"{where}: skipped {'; '.join(parts)}", stacklevel=3)
