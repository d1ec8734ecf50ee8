"""Benchmark result files: one JSON per model (and per classical fold) under the output folder.

The timm habit: every model becomes one flat record on disk, a failed model records `error`, and
tables are made from these files, so a table can be re-made without retraining and an interrupted
run resumes from what is already there. `config.json` names the data (fingerprint), profile, seed
and folds the results belong to; results made under another configuration are never mixed in.

Layout of an output folder:
    config.json                       data fingerprint, profile (+ digest), seed, folds, backend
    results/<model>.json              one record per model (below)
    cnn/<model>/fold_<k>/             mcn.train's fold folders (model.keras, result.json, arrays.npz)
    cnn/<model>/figures/, classical/<model>/figures/   confusion, PR, ROC (+ curves, t-SNE for CNNs)
    classical/<model>/fold_<k>.json   one classical fold, with test indices and probabilities
    errors/<model>.txt                traceback of a model that failed
    comparison.{md,csv,tex,png}, critical_difference.png

A model record: model, family ("cnn" | "classical"), feature_set ("image" | "handcrafted" |
"embedding" | "hybrid"), classifier, class_names, backend, profile, seed, error (None or one line),
n_params, flops, seconds, figures, and folds: [{fold, metrics (mcn.metrics names), n_train
(crystals outside the test part), n_test, fit_seconds, inference_seconds_per_crystal, ...}].
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from mcn.files import write_text

RESULTS_DIR = "results"
CONFIG_FILE = "config.json"
OWN = (CONFIG_FILE, RESULTS_DIR, "cnn", "classical", "errors", "comparison.md", "comparison.csv", "comparison.tex",
       "comparison.png", "critical_difference.png")
"""Everything a benchmark writes in its folder: all that --overwrite may delete there."""


def slug(model: str) -> str:
    """File-system name of a model (`xgboost:hybrid` -> `xgboost-hybrid`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model)


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data: dict) -> None:
    """Write atomically (temporary file in the same folder, then rename): no half-written results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=1, default=_default, allow_nan=True))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def check_config(out_dir: Path, config: dict, fresh: bool) -> None:
    """Claim `out_dir` for `config`; refuse a folder holding results of a different configuration."""
    path = Path(out_dir) / CONFIG_FILE
    if path.is_file() and not fresh:
        old = read_json(path)
        changed = [k for k in config if old.get(k) != config[k]]
        if changed:
            detail = ", ".join(f"{k} {old.get(k)!r} -> {config[k]!r}" for k in changed)
            raise ValueError(f"{out_dir} holds results of another configuration ({detail}); "
                             "pass --overwrite to replace them or choose another --out")
    write_json(path, config)


def classical_fold_path(out_dir: Path, model: str, fold: int) -> Path:
    """Where one fold of a classical model is stored."""
    return Path(out_dir) / "classical" / slug(model) / f"fold_{fold}.json"


def result_path(out_dir: Path, model: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{slug(model)}.json"


def relative_to_record(out_dir: Path, model: str, path: str | Path) -> str:
    """`path` as stored in `model`'s record: relative to the record's folder, so a moved or copied
    output folder resumes with its own files."""
    return os.path.relpath(Path(path).resolve(), result_path(out_dir, model).parent.resolve())


def resolve_from_record(out_dir: Path, model: str, stored: str) -> Path | None:
    """The file a record's relative path names, or None when it is missing or lies outside
    `out_dir` (an absolute path of an older record points at another folder's file)."""
    out_dir = Path(out_dir).resolve()
    path = (result_path(out_dir, model).parent / stored).resolve()
    return path if path.is_file() and path.is_relative_to(out_dir) else None


def save_result(out_dir: Path, result: dict) -> Path:
    path = result_path(out_dir, result["model"])
    write_json(path, result)
    return path


def load_result(out_dir: Path, model: str) -> dict | None:
    """The stored result of `model`, or None where there is none."""
    path = result_path(out_dir, model)
    return read_json(path) if path.is_file() else None


def load_results(out_dir: Path) -> list[dict]:
    """Every stored model result under `out_dir`, in file-name order.

    Hidden files are skipped: they are temporary files of writes that were interrupted (SIGKILL,
    power cut) or are still going on, never results.
    """
    folder = Path(out_dir) / RESULTS_DIR
    if not folder.is_dir():
        return []
    return [read_json(p) for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]
