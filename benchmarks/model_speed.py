"""Speed of every registry CNN: parameters, FLOPs per crystal, training and inference crystals per second.

Each model trains `--epochs` epochs (Adam, categorical cross-entropy, like the paper protocol) on
`--n-crystals` random synthetic 1-channel crystals at batch `--batch-size`, at its default input size
(or `--input-size`). Seconds per epoch is the median over the epochs after the first (the first
includes tracing / XLA compilation, reported on its own); with one epoch it is that epoch. Training
crystals per second follow from it; inference crystals per second time one prediction pass over the
same crystals after a warm-up batch.
MicroCrystalNet's NSR block is fitted on the same crystals first (`prepare_seconds`). A model that
fails gets an `error` cell and the run goes on (timm's benchmark habit).

`--backend` picks the Keras backend: the script re-runs itself in a fresh process with KERAS_BACKEND
set, because the backend is fixed when keras is first imported.

Writes OUT/model_speed_<backend>.csv and .md (refuses to replace them without --overwrite).
Small check: `python -m benchmarks.model_speed --n-crystals 128 --epochs 1 --input-size 75
--models microcrystalnet,vgg16 --out /tmp/model_speed`.
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend default before keras is first imported)

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mcn import cli
from mcn.experiment.profiles import PAPER, resolve_models
from mcn.experiment.report import to_markdown
from mcn.files import write_text

COLUMNS = (
    "model", "backend", "device", "input_size", "params", "gflops_per_crystal", "n_crystals",
    "batch_size", "seconds_per_epoch", "first_epoch_seconds", "train_crystals_per_second",
    "inference_crystals_per_second", "prepare_seconds", "error",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_speed", description=__doc__.split("\n")[0])
    cli.models(p, "cnn")
    p.add_argument("--n-crystals", type=int, default=1482, help="crystals per epoch (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    cli.epochs(p, 3, default_text="3, timed; the first is a warm-up")
    cli.input_size(p, default_text="each model's own, see mcn.models.model_defaults")
    cli.backend(p)
    cli.seed(p)
    cli.out(p, default="mlruns/speed/models")
    cli.overwrite(p)
    cli.quiet(p)
    return p


def _check_args(args: argparse.Namespace, registered: list[str]) -> list[str]:
    """The models to run; refuses bad counts and unknown names before anything is built."""
    for name in ("n_crystals", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    return resolve_models(args.models, PAPER, cnns=registered, kinds=("cnn",))


def _device() -> str:
    """The accelerator Keras trains on, in words ('cpu' when none)."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return gpus[0].name if gpus else "cpu"


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall seconds of every epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    return EpochTimer()


def measure(name: str, args: argparse.Namespace) -> dict:
    """One flat result row for one model; an exception becomes the row's `error`."""
    import keras

    from mcn.models import count_flops, create_model, model_defaults, prepare_model
    from mcn.train.backend import seed_everything

    size = args.input_size or model_defaults(name).input_size
    row = {"model": name, "backend": keras.backend.backend(), "input_size": size,
           "n_crystals": args.n_crystals, "batch_size": args.batch_size}
    try:
        seed_everything(args.seed)
        rng = np.random.default_rng(args.seed)
        x = rng.random((args.n_crystals, size, size, 1), dtype=np.float32)
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, args.n_crystals)]
        model = create_model(name, (size, size, 1), num_classes=4)
        row.update(params=model.count_params(), gflops_per_crystal=count_flops(model) / 1e9)
        start = time.perf_counter()
        prepare_model(model, x)
        row["prepare_seconds"] = time.perf_counter() - start
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        timer = _epoch_timer()
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=[timer])
        per_epoch = float(np.median(timer.seconds[1:] or timer.seconds))
        model.predict(x[:args.batch_size], batch_size=args.batch_size, verbose=0)
        start = time.perf_counter()
        model.predict(x, batch_size=args.batch_size, verbose=0)
        row.update(seconds_per_epoch=per_epoch, first_epoch_seconds=timer.seconds[0],
                   train_crystals_per_second=args.n_crystals / per_epoch,
                   inference_crystals_per_second=args.n_crystals / (time.perf_counter() - start))
    except Exception as exc:  # noqa: BLE001 - one failing model must not stop the benchmark
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return row


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """String cells: counts with thousands separators, floats to 3 significant digits."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, (int, np.integer)):
            return f"{value:,}"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return frame.astype(object).apply(lambda column: column.map(cell))


def _needs_fresh_process(backend: str) -> bool:
    """Select the backend here if keras is not imported yet; else it needs a fresh process."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend() != backend
    os.environ["KERAS_BACKEND"] = backend
    return False


def main(argv: list[str] | None = None) -> None:
    """Command line of the model speed benchmark."""
    args = build_parser().parse_args(argv)
    if _needs_fresh_process(args.backend):
        argv = sys.argv[1:] if argv is None else list(argv)
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        code = subprocess.run([sys.executable, "-m", "benchmarks.model_speed", *argv], env=env).returncode
        if code:
            sys.exit(code)
        return
    from mcn.models import list_models

    try:
        models = _check_args(args, list_models())
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    out = Path(args.out)
    csv_path, md_path = out / f"model_speed_{args.backend}.csv", out / f"model_speed_{args.backend}.md"
    if csv_path.exists() and not args.overwrite:
        sys.exit(f"error: {csv_path}: exists; pass --overwrite to replace it")
    device = _device()
    rows = [measure(name, args) for name in tqdm(models, desc=f"models on {args.backend}", unit="model", disable=args.quiet)]
    frame = pd.DataFrame(rows).assign(device=device).reindex(columns=list(COLUMNS))
    table = to_markdown(_display(frame.drop(columns=["backend", "device", "n_crystals", "batch_size"])))
    header = (f"# Model speed\n\nbackend {args.backend} on {device} ({platform.machine()}, "
              f"{os.cpu_count()} CPUs); {args.n_crystals} random crystals per epoch, batch "
              f"{args.batch_size}; seconds per epoch = median after the first (warm-up) epoch; "
              "FLOPs count a multiply-add as 2.")
    out.mkdir(parents=True, exist_ok=True)
    write_text(csv_path, frame.to_csv(index=False))
    write_text(md_path, f"{header}\n\n{table}\n")
    print(table)
    failed = int(frame["error"].notna().sum())
    print(f"{len(frame) - failed}/{len(frame)} models measured; wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
