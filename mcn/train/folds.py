"""Fold folders on disk: one trained fold as `fold_<k>/` (model.keras, result.json, arrays.npz).

A fold is written into a temporary folder and renamed into place, so a fold folder is either complete
or absent and an interrupted cross-validation resumes where it stopped. A fold folder records the
hash of the run's settings, the data fingerprint and the split; resuming against different ones is
refused, never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mcn.data.splits import Fold
from mcn.errors import DataError
from mcn.files import atomic_dir, atomic_path, write_text
from mcn.train.config import TrainConfig

RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"
MODEL_FILE = "model.keras"
LOGGED_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_f1_macro")
"""The per-epoch values Keras logs that a fold keeps."""
HISTORY_KEYS = (*LOGGED_KEYS, "lr", "seconds")


class ResumeError(ValueError):
    """An existing fold folder was made with other settings or data; resuming would mix runs."""


@dataclass
class FoldResult:
    """What one fold's training produced; `save`/`load` round-trip it through a folder.

    test_index: indices into the data set of this fold's test crystals; y_true and probabilities
        (float32, (n_test, n_classes)) follow that order.
    embeddings: penultimate-layer features of EVERY crystal of the data set from this fold's model,
        (n_crystals, d): classical models on embeddings train on fold k's training rows only.
    history: per-epoch lists under HISTORY_KEYS (val_f1_macro is keras' F1Score, which counts a class
        absent from the validation part as 0: its peak epoch is comparable, its level is not the
        reported f1_macro; lr is the rate used during the epoch, seconds its
        wall time); best_epoch indexes them (the weights kept).
    seconds_per_epoch: median epoch wall time, so one-off compilation (jax/XLA) does not dominate;
        train_seconds is the whole fit.
    train_crystals: training crystals per epoch (balancing copies and whole-batch top-up included);
        None in records written before it was kept.
    """

    fold: int
    model_name: str
    test_index: np.ndarray
    y_true: np.ndarray
    probabilities: np.ndarray
    embeddings: np.ndarray
    metrics: dict[str, float]
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    seconds_per_epoch: float
    train_seconds: float
    inference_seconds_per_crystal: float
    n_params: int
    flops: int
    model_path: str
    backend: str
    input_size: int
    class_names: tuple[str, ...]
    hparams: dict
    config: dict
    config_hash: str
    data_fingerprint: str
    split_hash: str
    train_crystals: int | None = None

    ARRAYS = ("test_index", "y_true", "probabilities", "embeddings")

    def save(self, directory: str | Path) -> None:
        """Write result.json and arrays.npz into `directory`, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in asdict(self).items() if k not in self.ARRAYS}
        # relative to the record, so a moved or copied fold folder loads its own model
        record["model_path"] = os.path.relpath(self.model_path, directory) if self.model_path else ""
        write_text(directory / RESULT_FILE, json.dumps(record, indent=1))
        with atomic_path(directory / ARRAYS_FILE) as tmp:
            np.savez(tmp, **{k: getattr(self, k) for k in self.ARRAYS})

    @classmethod
    def load(cls, directory: str | Path) -> "FoldResult":
        directory = Path(directory)
        try:
            record = json.loads((directory / RESULT_FILE).read_text())
            with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:
                record.update({k: arrays[k] for k in cls.ARRAYS})
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{directory}: not a readable fold result ({exc})") from exc
        record["class_names"] = tuple(record["class_names"])
        record["model_path"] = _own_model(directory, record["model_path"])
        return cls(**record)


def _own_model(directory: Path, stored: str) -> str:
    """The fold's model file, inside its own folder ("" for a fold saved without its model).

    Records made before paths were stored relative hold an absolute path to where the folder was
    made; only its file name is used, so a moved or copied folder never loads another's model.
    """
    if not stored:
        return ""
    path = directory / Path(stored).name
    if not path.is_file():
        raise DataError(f"{directory}: its model file {path.name} is missing; the fold must be retrained")
    return str(path)


def run_hash(model_name: str, config: TrainConfig, hparams: dict | None, backend: str) -> str:
    """Hash of everything besides the data that decides a fold's result."""
    text = json.dumps({"model": model_name, "hparams": hparams or {}, "config": config.settings(),
                       "backend": backend}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_hash(fold: Fold) -> str:
    """Hash of a fold's train/val/test indices, so a resumed fold is the same split."""
    h = hashlib.sha256()
    for part in (fold.train, fold.val, fold.test):
        h.update(np.asarray(part, np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


def fold_dir(out_dir: str | Path, fold: int) -> Path:
    return Path(out_dir) / f"fold_{fold}"


def save_model(model, path: Path) -> None:
    """Save `model`'s architecture and weights as a `.keras` file, without optimizer state or compile
    settings.

    A compiled model saves its optimizer's slots too: Adam keeps two moments per weight, so the file
    was 3x the weights (EfficientNetB0: 49 MB for 16 MB). A fold is never resumed mid-training, so
    those slots are dead weight; an uncompiled copy with the same weights saves only what predicting
    needs, and `keras.saving.load_model(path)` returns an uncompiled model (compile it to fine-tune).
    """
    bare = type(model).from_config(model.get_config())
    bare.set_weights(model.get_weights())
    bare.save(path)


def save_fold(result: FoldResult, model, target: Path) -> None:
    """Write the fold into a unique temporary folder, then rename it to `target` (replacing an old one).

    The model is saved by `save_model` (architecture and weights, no optimizer state)."""
    with atomic_dir(target) as tmp:
        save_model(model, tmp / MODEL_FILE)
        result.model_path = str(tmp / MODEL_FILE)
        result.save(tmp)
    result.model_path = str(target / MODEL_FILE)


def check_resumable(directory: Path, expected: dict[str, str]) -> None:
    """Refuse to reuse a fold folder made with other settings, data or split."""
    try:
        record = json.loads((directory / RESULT_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{directory / RESULT_FILE}: unreadable fold result ({exc})") from exc
    for key, what in (("config_hash", "model, settings or backend"), ("data_fingerprint", "data set"),
                      ("split_hash", "split")):
        if record.get(key) != expected[key]:
            raise ResumeError(f"{directory}: was trained with a different {what} ({record.get(key)} != "
                              f"{expected[key]}); use --overwrite (resume=False) to retrain, or another --out")
