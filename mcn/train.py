"""Train a registry CNN under the paper's protocol (section 4.3), fold by fold, resumably.

Protocol: Adam at 1e-3, categorical cross-entropy, batch 32, up to 30 epochs, ReduceLROnPlateau
(factor 0.1, patience 5) and early stopping on the validation loss with the best weights kept, and
the training part balanced by 90-degree rotations. Every knob lives in `TrainConfig`.

Each fold is saved to `out_dir/fold_<k>/` (model.keras, result.json, arrays.npz), written into a
temporary folder and renamed into place, so a fold folder is either complete or absent and an
interrupted cross-validation resumes where it stopped. A fold folder records the hash of the run's
settings and the data fingerprint; resuming against different ones is refused, never mixed.

Keras is imported inside functions only: the command line must set KERAS_BACKEND from `--backend`
before keras is first imported, and `python -m mcn.train` imports this module before `main` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import mcn
from mcn.data.balance import apply_rotations, balance_by_rotation
from mcn.data.splits import Fold, make_folds
from mcn import checks
from mcn.errors import DataError, exit_interrupted
from mcn.metrics import classification_metrics
from mcn.files import atomic_dir, atomic_path, write_text

OPTIMIZERS = ("adam", "sgd", "rmsprop")
RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"
MODEL_FILE = "model.keras"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class ResumeError(ValueError):
    """An existing fold folder was made with other settings or data; resuming would mix runs."""


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol; defaults are the paper's (4.3).

    early_stopping_patience: the paper says "several epochs"; 10 lets the LR drop (patience 5) act
        at least once before training stops.
    momentum: used by the "sgd" optimizer only.
    input_size: square patch side; None takes the model's default (`model_defaults(name)`).
    recalibrate_bn: after training, re-estimate every BatchNorm's moving statistics on training
        patches (`mcn.models.recalibrate_batchnorm`); not in the paper, for budgets of a few
        hundred steps, after which the moving averages still weigh their initial values.
    seed: fixes the folds, the balancing and the weights (fold k uses seed * 1000 + k).
    progress: per-epoch tqdm bar; does not change results, so it is not part of the run hash.
    """

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_factor: float = 0.1
    lr_patience: int = 5
    min_lr: float = 0.0
    early_stopping_patience: int = 10
    balance: bool = True
    input_size: int | None = None
    recalibrate_bn: bool = False
    seed: int = 0
    progress: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1; got {getattr(self, name)}.")
        if self.learning_rate <= 0 or not 0 < self.lr_factor < 1:
            raise ValueError(f"need learning_rate > 0 and 0 < lr_factor < 1; got {self.learning_rate}, "
                             f"{self.lr_factor}.")
        if self.input_size is not None and self.input_size < 8:
            raise ValueError(f"`input_size` must be >= 8 pixels; got {self.input_size}.")

    def settings(self) -> dict:
        """The fields that change results (everything but `progress`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.compare}


@dataclass
class FoldResult:
    """What one fold's training produced; `save`/`load` round-trip it through a folder.

    test_index: indices into the data set of this fold's test crystals; y_true and probabilities
        (float32, (n_test, n_classes)) follow that order.
    embeddings: penultimate-layer features of EVERY crystal of the data set from this fold's model,
        (n_crystals, d): classical models on embeddings train on fold k's training rows only.
    history: per-epoch lists under HISTORY_KEYS (lr is the rate used during the epoch, seconds its
        wall time); best_epoch indexes them (the weights kept).
    seconds_per_epoch: median epoch wall time, so one-off compilation (jax/XLA) does not dominate;
        train_seconds is the whole fit.
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


def fold_seed(seed: int, fold: int) -> int:
    """One seed per (run, fold): fixes the balancing, the shuffling and the initial weights."""
    return seed * 1000 + fold


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


def _optimizer(config: TrainConfig):
    import keras

    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(config.learning_rate)
    return keras.optimizers.Adam(config.learning_rate)


def _epoch_recorder(total: int, description: str, show: bool):
    """A Keras callback recording per-epoch logs, learning rate and wall time, with a tqdm bar."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.history = {k: [] for k in HISTORY_KEYS}
            self.bar = tqdm(total=total, desc=description, unit="epoch", disable=not show, leave=False)

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            self.lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                self.history[key].append(float(logs.get(key, np.nan)))
            self.history["lr"].append(self.lr)
            self.history["seconds"].append(time.perf_counter() - self.started)
            self.bar.set_postfix(loss=f"{logs.get('loss', np.nan):.3f}",
                                 val_loss=f"{logs.get('val_loss', np.nan):.3f}",
                                 val_acc=f"{logs.get('val_accuracy', np.nan):.3f}")
            self.bar.update()

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochRecorder()


def training_arrays(dataset, fold: Fold, size: int, balance: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fold's training patches and labels, balanced by rotated copies when asked."""
    x, y = dataset.patches(size)[fold.train], dataset.labels[fold.train]
    if not balance:
        return x, y
    index, k = balance_by_rotation(y, seed)
    return apply_rotations(x[index], k), y[index]


def predict_all(model, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Class probabilities and penultimate-layer embeddings of every patch from one pass, and the
    seconds per crystal of that pass. It is timed after a warm-up on each batch shape (jax and
    tensorflow trace / compile once per shape, the last partial batch included)."""
    import keras

    from mcn.models import embedding_model

    both = keras.Model(model.input, [model.output, embedding_model(model).output])
    for shape in {min(batch_size, len(x)), len(x) % batch_size} - {0}:
        both.predict(x[:shape], batch_size=batch_size, verbose=0)
    start = time.perf_counter()
    probabilities, embeddings = both.predict(x, batch_size=batch_size, verbose=0)
    seconds = (time.perf_counter() - start) / max(len(x), 1)
    return probabilities.astype(np.float32), embeddings.astype(np.float32).reshape(len(x), -1), seconds


def train_fold(model_name: str, dataset, fold: Fold, config: TrainConfig, hparams: dict | None = None,
               out_dir: str | Path | None = None) -> FoldResult:
    """Train `model_name` on one fold and score it on the fold's test part.

    With `out_dir`, the fold is saved to out_dir/fold_<k>/ (replacing any folder there: call
    `cross_validate` to resume instead). Without it the model is not kept and model_path is "".
    """
    import keras

    from mcn.models import count_flops, create_model, model_defaults, prepare_model, recalibrate_batchnorm

    if len(fold.val) == 0 or len(fold.test) == 0:
        raise ValueError(f"fold {fold.index} needs non-empty validation and test parts")
    hparams = dict(hparams or {})
    size = config.input_size or model_defaults(model_name).input_size
    seed = fold_seed(config.seed, fold.index)
    keras.utils.set_random_seed(seed)
    n_classes = dataset.num_classes
    x_all = dataset.patches(size)
    x_train, y_train = training_arrays(dataset, fold, size, config.balance, seed)

    model = create_model(model_name, input_shape=(size, size, 1), num_classes=n_classes, **hparams)
    prepare_model(model, x_train, seed=seed)
    model.compile(optimizer=_optimizer(config), loss="categorical_crossentropy", metrics=["accuracy"])
    recorder = _epoch_recorder(config.epochs, f"{model_name} fold {fold.index}", config.progress)
    stopper = keras.callbacks.EarlyStopping("val_loss", patience=config.early_stopping_patience,
                                            restore_best_weights=True)
    plateau = keras.callbacks.ReduceLROnPlateau("val_loss", factor=config.lr_factor,
                                                patience=config.lr_patience, min_lr=config.min_lr)
    start = time.perf_counter()
    model.fit(x_train, np.eye(n_classes, dtype=np.float32)[y_train],
              validation_data=(x_all[fold.val], np.eye(n_classes, dtype=np.float32)[dataset.labels[fold.val]]),
              epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0,
              callbacks=[recorder, plateau, stopper])
    if config.recalibrate_bn:
        recalibrate_batchnorm(model, x_train, seed=seed)
    train_seconds = time.perf_counter() - start

    all_probabilities, embeddings, per_crystal = predict_all(model, x_all, config.batch_size)
    probabilities = all_probabilities[fold.test]
    y_true = dataset.labels[fold.test]
    history = recorder.history
    result = FoldResult(
        fold=fold.index, model_name=model_name, test_index=np.asarray(fold.test, np.int64),
        y_true=y_true, probabilities=probabilities, embeddings=embeddings,
        metrics=classification_metrics(y_true, probabilities, dataset.class_names),
        history=history, epochs_run=len(history["loss"]),
        best_epoch=int(np.nanargmin(history["val_loss"])),
        seconds_per_epoch=float(np.median(history["seconds"])), train_seconds=train_seconds,
        inference_seconds_per_crystal=per_crystal, n_params=int(model.count_params()),
        flops=int(count_flops(model)), model_path="", backend=keras.backend.backend(), input_size=size,
        class_names=dataset.class_names, hparams=hparams, config=config.settings(),
        config_hash=run_hash(model_name, config, hparams, keras.backend.backend()),
        data_fingerprint=dataset.fingerprint(), split_hash=split_hash(fold))
    if out_dir is not None:
        _save_fold(result, model, fold_dir(out_dir, fold.index))
    return result


def _save_fold(result: FoldResult, model, target: Path) -> None:
    """Write the fold into a unique temporary folder, then rename it to `target` (replacing an old one)."""
    with atomic_dir(target) as tmp:
        model.save(tmp / MODEL_FILE)
        result.model_path = str(tmp / MODEL_FILE)
        result.save(tmp)
    result.model_path = str(target / MODEL_FILE)


def _check_resumable(directory: Path, expected: dict[str, str]) -> None:
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


def summary_line(result: FoldResult) -> str:
    m = result.metrics
    return (f"{result.model_name} fold {result.fold}: top1 {m['top1']:.3f}  f1 {m['f1_macro']:.3f}  "
            f"top2 {m['top2']:.3f}  | {result.epochs_run} epochs (best {result.best_epoch + 1}), "
            f"{result.seconds_per_epoch:.1f} s/epoch, {result.n_params:,} params")


def cross_validate(model_name: str, dataset, folds: list[Fold], config: TrainConfig,
                   hparams: dict | None = None, out_dir: str | Path | None = None, resume: bool = True,
                   progress: bool = True) -> list[FoldResult]:
    """Train and score `model_name` on every fold; with `out_dir`, completed folds are loaded.

    resume=False retrains every fold and replaces its folder. Existing folds are checked against
    this run's settings, data and splits before any training starts.
    """
    import keras

    config = replace(config, progress=progress)
    folders = {f.index: fold_dir(out_dir, f.index) for f in folds} if out_dir is not None else {}
    done = {k for k, d in folders.items() if resume and (d / RESULT_FILE).exists()}
    for k in sorted(k for k in done if not (folders[k] / MODEL_FILE).is_file()):
        tqdm.write(f"{folders[k]}: its model file is missing; retraining the fold")
        done.discard(k)
    if done:
        expected = {"config_hash": run_hash(model_name, config, hparams, keras.backend.backend()),
                    "data_fingerprint": dataset.fingerprint()}
        for fold in folds:
            if fold.index in done:
                _check_resumable(folders[fold.index], {**expected, "split_hash": split_hash(fold)})
    results = []
    for fold in tqdm(folds, desc=f"{model_name} folds", unit="fold", disable=not progress):
        if fold.index in done:
            result = FoldResult.load(folders[fold.index])
            tqdm.write(f"{model_name} fold {fold.index}: loaded from {folders[fold.index]} (not retrained)")
        else:
            result = train_fold(model_name, dataset, fold, config, hparams, out_dir)
        tqdm.write(summary_line(result))
        results.append(result)
    return results


def parse_hparams(items: list[str]) -> dict:
    """KEY=VALUE pairs; values are read as JSON when they parse (numbers, lists), else as text."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--hparam expects KEY=VALUE; got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m mcn.train",
        description="Train one CNN by grouped cross-validation (or the 80/10/10 holdout) on one data set, "
                    "print per-fold and mean +- std metrics and write the figures.")
    p.add_argument("--data", help="patch folder or scene folder (default: the cached synthetic data set)")
    p.add_argument("--model", default="microcrystalnet", help="registry name (default: %(default)s)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--folds", type=int, default=5, help="grouped K-fold CV (default: %(default)s)")
    split.add_argument("--holdout", action="store_true",
                       help="one split instead of CV: a pre-split folder's own, else grouped 80/10/10")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.learning_rate, help="initial learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    p.add_argument("--lr-patience", type=int, default=defaults.lr_patience)
    p.add_argument("--patience", type=int, default=defaults.early_stopping_patience,
                   help="early-stopping patience in epochs (default: %(default)s)")
    p.add_argument("--no-balance", action="store_true", help="do not balance classes by rotated copies")
    p.add_argument("--input-size", type=int, help="patch side in pixels (default: the model's)")
    p.add_argument("--recalibrate-bn", action="store_true",
                   help="re-estimate BatchNorm statistics on training patches after training (short budgets)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="fixes folds, balancing and weights")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor argument, repeatable (values parsed as JSON when possible)")
    p.add_argument("--pixel-size-nm", type=float, help="pixel size when the data does not record it")
    p.add_argument("--out", help="run folder (default: mlruns/train/<model>_<data set name>)")
    p.add_argument("--backend", choices=("torch", "tensorflow", "jax"),
                   default=os.environ.get("KERAS_BACKEND", "torch"), help="Keras backend (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="retrain every fold, replacing saved ones")
    p.add_argument("--no-report", action="store_true", help="skip the figures (metrics are still written)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        mcn.select_backend(args.backend)
        from mcn.data.load import load_dataset
        from mcn.data.patches import given_split
        from mcn.evaluate import write_report
        from mcn.models import list_models, model_defaults

        if args.model not in list_models():
            raise ValueError(f"unknown model {args.model!r}; choose from {', '.join(list_models())}")
        checks.seed(args.seed)
        checks.at_least("--folds", None if args.holdout else args.folds, 2)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                             optimizer=args.optimizer, lr_patience=args.lr_patience,
                             early_stopping_patience=args.patience, balance=not args.no_balance,
                             input_size=args.input_size, recalibrate_bn=args.recalibrate_bn, seed=args.seed)
        hparams = parse_hparams(args.hparam)
        unknown = sorted(set(hparams) - set(model_defaults(args.model).hparams))
        if unknown:
            raise ValueError(f"--hparam {unknown[0]}: not an argument of {args.model}; it takes "
                             f"{', '.join(sorted(model_defaults(args.model).hparams))}")
        if args.out is not None:
            checks.writable_folder(args.out)
            checks.outside_data(args.out, args.data)
        dataset = load_dataset(args.data, pixel_size_nm=args.pixel_size_nm)
        published = given_split(dataset) if args.holdout else None
        folds = [published] if published else make_folds(dataset, n_splits=args.folds, seed=args.seed,
                                                         holdout=args.holdout)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        exit_interrupted("before training; nothing to resume")
    out_dir = Path(args.out or Path("mlruns") / "train" / f"{args.model}_{dataset.name}")
    print(f"{dataset.name}: {len(dataset)} crystals {dataset.class_counts()}, {len(folds)} fold(s), "
          f"{args.model} on {args.backend} -> {out_dir}")
    try:
        results = cross_validate(args.model, dataset, folds, config, hparams, out_dir,
                                 resume=not args.overwrite, progress=not args.quiet)
    except (DataError, ResumeError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        done = sum((fold_dir(out_dir, f.index) / RESULT_FILE).is_file() for f in folds)
        exit_interrupted(f"{done} of {len(folds)} fold(s) saved in {out_dir}; rerun the same command to resume")
    write_report(results, dataset, out_dir, figures=not args.no_report)
    print(f"done: {out_dir}")


if __name__ == "__main__":
    main()
