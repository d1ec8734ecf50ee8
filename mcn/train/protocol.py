"""Train a registry CNN under the paper's protocol (section 4.3), fold by fold, resumably.

Protocol: Adam at 1e-3, categorical cross-entropy, batch 32, up to 30 epochs, ReduceLROnPlateau
(factor 0.1, patience 5) and early stopping on the validation loss with the best weights kept, and
the training part balanced by 90-degree rotations. Every knob lives in `TrainConfig`.

Keras is imported inside functions only: the command line must set KERAS_BACKEND from `--backend`
before keras is first imported.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mcn.data.balance import apply_rotations, balance_by_rotation
from mcn.data.splits import Fold
from mcn.metrics import classification_metrics
from mcn.train.backend import seed_everything
from mcn.train.config import TrainConfig
from mcn.train.folds import (HISTORY_KEYS, LOGGED_KEYS, MODEL_FILE, RESULT_FILE, FoldResult, check_resumable,
                             fold_dir, run_hash, save_fold, split_hash)


def fold_seed(seed: int, fold: int) -> int:
    """One seed per (run, fold): fixes the balancing, the shuffling and the initial weights."""
    return seed * 1000 + fold


def _optimizer(config: TrainConfig, steps: int):
    """The configured optimizer; under the one-cycle schedule its rate follows the step count."""
    import keras

    rate = config.learning_rate
    if config.schedule == "onecycle":
        warmup = int(config.warmup_fraction * steps)
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate / 10, max(steps - warmup, 1),
                                                      warmup_target=config.learning_rate, warmup_steps=warmup)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=config.momentum)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.Adam(rate)


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
            for key in LOGGED_KEYS:
                self.history[key].append(float(logs.get(key, np.nan)))
            self.history["lr"].append(self.lr)
            self.history["seconds"].append(time.perf_counter() - self.started)
            self.bar.set_postfix(loss=f"{logs.get('loss', np.nan):.3f}",
                                 val_loss=f"{logs.get('val_loss', np.nan):.3f}",
                                 val_f1=f"{logs.get('val_f1_macro', np.nan):.3f}")
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


def whole_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top the training set up to a whole number of batches with seeded random repeats of its rows.

    Every training step then has one batch shape, so jax and tensorflow trace and compile the step
    once per model and input size, not once more per fold for a last partial batch whose size
    depends on the fold (on a GPU a jax train-step compilation costs 20-80 s). At most
    batch_size - 1 repeats; a set smaller than one batch is left as it is.
    """
    short = -len(x) % batch_size
    if len(x) < batch_size or short == 0:
        return x, y
    extra = np.random.default_rng(seed).choice(len(x), short, replace=False)
    return np.concatenate([x, x[extra]]), np.concatenate([y, y[extra]])


def flips(x: np.ndarray) -> list[np.ndarray]:
    """A batch of (n, h, w, c) patches and its horizontal, vertical and double flips."""
    return [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]


def predict_all(model, x: np.ndarray, batch_size: int, test_flips: bool = False
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """Class probabilities and penultimate-layer embeddings of every patch, and the seconds per
    crystal of the prediction; with `test_flips`, both are means over the four flips of each patch.
    The input is padded with blank patches to whole batches (their outputs dropped: inference treats
    rows independently), so jax and tensorflow compile one batch shape per model and input size; the
    pass is timed after a warm-up batch that compiles it."""
    import keras

    from mcn.models import embedding_model

    both = keras.Model(model.input, [model.output, embedding_model(model).output])
    padded = np.concatenate([x, np.zeros((-len(x) % batch_size, *x.shape[1:]), x.dtype)])
    both.predict(padded[:batch_size], batch_size=batch_size, verbose=0)
    start = time.perf_counter()
    views = flips(padded) if test_flips else [padded]
    outputs = [both.predict(np.ascontiguousarray(v), batch_size=batch_size, verbose=0) for v in views]
    seconds = (time.perf_counter() - start) / max(len(x), 1)
    n = len(x)
    probabilities, embeddings = (np.mean([o[i][:n] for o in outputs], axis=0) for i in (0, 1))
    return probabilities.astype(np.float32), embeddings.astype(np.float32).reshape(n, -1), seconds


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
    seed_everything(seed)
    n_classes = dataset.num_classes
    x_all = dataset.patches(size)
    x_train, y_train = whole_batches(*training_arrays(dataset, fold, size, config.balance, seed),
                                     config.batch_size, seed)

    model = create_model(model_name, input_shape=(size, size, 1), num_classes=n_classes, **hparams)
    prepare_model(model, x_train, seed=seed)
    # macro-F1 per epoch on the validation part: the learning curve of the score the tables report
    steps_per_epoch = -(-len(x_train) // config.batch_size)
    model.compile(optimizer=_optimizer(config, config.epochs * steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy", keras.metrics.F1Score(average="macro", name="f1_macro")])
    recorder = _epoch_recorder(config.epochs, f"{model_name} fold {fold.index}", config.progress)
    stopper = [keras.callbacks.EarlyStopping("val_loss", patience=config.early_stopping_patience,
                                             restore_best_weights=True)] if config.schedule == "plateau" else []
    plateau = [keras.callbacks.ReduceLROnPlateau("val_loss", factor=config.lr_factor, patience=config.lr_patience,
                                                 min_lr=config.min_lr)] if config.schedule == "plateau" else []
    start = time.perf_counter()
    model.fit(x_train, np.eye(n_classes, dtype=np.float32)[y_train],
              validation_data=(x_all[fold.val], np.eye(n_classes, dtype=np.float32)[dataset.labels[fold.val]]),
              epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0,
              callbacks=[recorder, *plateau, *stopper])
    if config.recalibrate_bn:
        recalibrate_batchnorm(model, x_train, seed=seed)
    train_seconds = time.perf_counter() - start

    all_probabilities, embeddings, per_crystal = predict_all(model, x_all, config.batch_size, config.test_flips)
    probabilities = all_probabilities[fold.test]
    y_true = dataset.labels[fold.test]
    history = recorder.history
    result = FoldResult(
        fold=fold.index, model_name=model_name, test_index=np.asarray(fold.test, np.int64),
        y_true=y_true, probabilities=probabilities, embeddings=embeddings,
        metrics=classification_metrics(y_true, probabilities, dataset.class_names),
        history=history, epochs_run=len(history["loss"]),
        best_epoch=int(np.nanargmin(history["val_loss"])) if stopper else len(history["loss"]) - 1,
        seconds_per_epoch=float(np.median(history["seconds"])), train_seconds=train_seconds,
        inference_seconds_per_crystal=per_crystal, n_params=int(model.count_params()),
        flops=int(count_flops(model)), model_path="", backend=keras.backend.backend(), input_size=size,
        class_names=dataset.class_names, hparams=hparams, config=config.settings(),
        config_hash=run_hash(model_name, config, hparams, keras.backend.backend()),
        data_fingerprint=dataset.fingerprint(), split_hash=split_hash(fold), train_crystals=len(x_train))
    if out_dir is not None:
        save_fold(result, model, fold_dir(out_dir, fold.index))
    return result


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
                check_resumable(folders[fold.index], {**expected, "split_hash": split_hash(fold)})
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
