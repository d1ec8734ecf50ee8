"""The files of an export, written so that an interrupted export never leaves a half-replaced result.

Summaries, rock types, the run summary and the finished overlay folder go first, the crystal table
last: its presence means a complete export. Every file is written atomically; the overlay folder is
built beside its final place and swapped in whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from features.pipeline import ExportResult
from features.rocktype import plot_rock_types
from mcn.files import atomic_path, write_text

TABLE_SUFFIXES = (".csv", ".parquet")


def output_paths(out: Path) -> dict[str, Path]:
    """Every file or folder an export to `out` may write."""
    stem = str(out.parent / out.stem)
    return {"crystals": out, "images": Path(f"{stem}_images.csv"), "samples": Path(f"{stem}_samples.csv"),
            "summary": Path(f"{stem}_summary.json"), "overlays": Path(f"{stem}_overlays"),
            "rock_types": Path(f"{stem}_rocktypes.csv"), "rock_types_png": Path(f"{stem}_rocktypes.png")}


def write_table(table: pd.DataFrame, path: Path) -> None:
    """CSV or Parquet by the suffix, atomically."""
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)


def write_outputs(result: ExportResult, paths: dict[str, Path], overlays: Path | None = None) -> None:
    """Everything of `result` into `paths` (order in the module doc)."""
    write_table(result.images, paths["images"])
    write_table(result.samples, paths["samples"])
    if result.rock_typer is not None:
        write_table(result.rock_typer.table(), paths["rock_types"])
        plot_rock_types(result.rock_typer, paths["rock_types_png"])
    else:
        for stale in (paths["rock_types"], paths["rock_types_png"]):
            stale.unlink(missing_ok=True)
    write_text(paths["summary"], json.dumps(result.summary(), indent=2, default=str))
    if overlays is not None:
        swap_dir(overlays, paths["overlays"])
    write_table(result.crystals, paths["crystals"])


def swap_dir(new: Path, final: Path) -> None:
    """Put the finished folder `new` in place of `final`, removing the old one only afterwards."""
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
