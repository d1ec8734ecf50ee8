"""`python -m benchmarks.cv_models`: the six CNNs by 5-fold grouped CV on one Keras backend.

Reports, per model, mean +- std top-1 and macro F1 over the folds, parameter count, FLOPs per
crystal, seconds per epoch and where training converged (the epoch whose weights were kept, lowest
validation loss, and the epoch of peak validation macro-F1, medians over the folds), as cv_models.csv
and cv_models.md in `--out/<backend>/`, with each model's learning curves in
`--out/<backend>/<model>/training_curves.png`: run it once per backend to compare backends. Budgets
come from `mcn.experiment.profiles` ("quick" by default; `--profile paper` is the full paper protocol: 30
epochs, batch 32, every CNN at its own input size);
`--epochs` and `--input-size` override them. Training goes through `mcn.train.cross_validate`, so an
interrupted run resumes from its fold folders; a model that fails records its error and the run
goes on (the exit code then says so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import mcn
from mcn import cli
from mcn.experiment import profiles
from mcn.experiment.report import mean_std_columns, to_markdown
from mcn.errors import DataError
from mcn.files import write_text
from mcn.train.backend import resolve_backend, use_compilation_cache

COLUMNS = ("model", "backend", "device", "input_size", "epochs", "folds", "top1_mean", "top1_std", "f1_macro_mean",
           "f1_macro_std", "n_params", "flops", "seconds_per_epoch", "epochs_run", "best_epoch", "val_f1_peak_epoch",
           "train_seconds",
           "train_crystals_per_second", "inference_ms_per_crystal", "inference_crystals_per_second", "error")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cv_models", description=__doc__.split("\n")[0])
    cli.backend(p, auto=True)
    cli.profile(p, "quick")
    cli.models(p, "cnn")
    cli.epochs(p)
    cli.input_size(p, default_text="the profile's, raised to a model's minimum")
    cli.folds(p)
    cli.seed(p)
    cli.group_by(p)
    cli.data(p)
    cli.out(p, default="mlruns/cv_models")
    cli.overwrite(p)
    cli.compile_cache(p)
    cli.quiet(p)
    return p


def train_config(model: str, profile: profiles.Profile, args: argparse.Namespace):
    """The profile's protocol for `model`, with the command line's epochs / input size."""
    from mcn.models import model_defaults
    from mcn.train import TrainConfig

    kwargs = profile.train_kwargs(model)
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    if args.input_size is not None:
        kwargs["input_size"] = max(args.input_size, model_defaults(model).min_input_size)
    return TrainConfig(**kwargs, seed=args.seed, progress=not args.quiet)


def benchmark_model(model: str, dataset, folds, profile: profiles.Profile, args: argparse.Namespace) -> dict:
    """One table row: CV of `model`, or its error."""
    import keras

    from mcn.train import cross_validate

    config = train_config(model, profile, args)
    row = {"model": model, "backend": keras.backend.backend(), "device": profiles.detect_gpu(keras.backend.backend())
           or "cpu", "epochs": config.epochs, "folds": len(folds)}
    try:
        results = cross_validate(model, dataset, folds, config, profile.model_hparams(model),
                                 Path(args.out) / row["backend"] / model, resume=not args.overwrite,
                                 progress=not args.quiet)
    except Exception as exc:  # noqa: BLE001  (a failing model is recorded, the others still run)
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    return {**row, **summarize_folds(results, dataset, Path(args.out) / row["backend"] / model)}


def summarize_folds(results, dataset, folder: Path) -> dict:
    """A model's row from its fold results; writes its metrics files and learning curves to `folder`."""
    from mcn.evaluate import plot_training_curves, write_report

    table = write_report(results, dataset, folder, figures=False)
    plot_training_curves([r.history for r in results], folder / "training_curves.png")
    peaks = [int(np.nanargmax(f1)) + 1 for f1 in (r.history.get("val_f1_macro") or [] for r in results)
             if np.isfinite(f1).any()]
    mean, std = (table[table["fold"] == k].iloc[0] for k in ("mean", "std"))
    return {"input_size": results[0].input_size, "top1_mean": mean["top1"], "top1_std": std["top1"],
            "f1_macro_mean": mean["f1_macro"], "f1_macro_std": std["f1_macro"], "n_params": results[0].n_params,
            "flops": results[0].flops, "seconds_per_epoch": mean["seconds_per_epoch"],
            "epochs_run": mean["epochs_run"], "best_epoch": float(np.median([r.best_epoch + 1 for r in results])),
            "val_f1_peak_epoch": float(np.median(peaks)) if peaks else np.nan,
            "train_seconds": table["train_seconds"].iloc[:len(results)].sum(),
            # NaN for folds recorded before train_crystals was kept
            "train_crystals_per_second": float(np.mean([(r.train_crystals or np.nan) / r.seconds_per_epoch
                                                        for r in results])),
            "inference_ms_per_crystal": mean["inference_ms_per_crystal"],
            "inference_crystals_per_second": float(np.mean([1 / r.inference_seconds_per_crystal for r in results])),
            "error": ""}


def markdown(table: pd.DataFrame) -> str:
    """The table with mean +- std cells and readable counts."""
    cells = pd.DataFrame({
        "model": table["model"], "backend": table["backend"], "input": table["input_size"].astype("Int64"),
        **mean_std_columns(table.rename(columns={"top1_mean": "top1", "f1_macro_mean": "f1_macro"}),
                           ["top1", "f1_macro"], table["error"].astype(bool),
                           {"top1": "top-1", "f1_macro": "F1 (macro)"}),
        "params": [f"{v / 1e6:.2f} M" if v == v else "-" for v in table["n_params"]],
        "FLOPs / crystal": [f"{v / 1e9:.3f} G" if v == v else "-" for v in table["flops"]],
        "s / epoch": [f"{v:.2f}" if v == v else "-" for v in table["seconds_per_epoch"]],
        "epochs run": [f"{v:.1f}" if v == v else "-" for v in table["epochs_run"]],
        "kept epoch": [f"{v:.0f}" if v == v else "-" for v in table["best_epoch"]],
        "val F1 peak epoch": [f"{v:.0f}" if v == v else "-" for v in table["val_f1_peak_epoch"]],
        "train s (all folds)": [f"{v:.0f}" if v == v else "-" for v in table["train_seconds"]],
        "train crystals / s": [f"{v:,.0f}" if v == v else "-" for v in table["train_crystals_per_second"]],
        "inference crystals / s": [f"{v:,.0f}" if v == v else "-" for v in table["inference_crystals_per_second"]],
        "error": table["error"].fillna("")})
    return to_markdown(cells)


def write_tables(rows: list[dict], folder: Path) -> pd.DataFrame:
    """cv_models.csv and cv_models.md in `folder`, each written atomically."""
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("cv_models.csv", table.to_csv(index=False)), ("cv_models.md", markdown(table) + "\n")):
        write_text(folder / name, text)
    return table


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        profile = profiles.get_profile(args.profile)
        models = profiles.resolve_models(args.models, profile, kinds=("cnn",))
        args.backend = resolve_backend(args.backend, models)
        mcn.select_backend(args.backend)
        from mcn.data.load import load_dataset
        from mcn.data.splits import describe_grouping, make_folds, resolve_grouping

        dataset = load_dataset(args.data)
        group_by, why = resolve_grouping(dataset, args.folds, args.group_by)
        folds = make_folds(dataset, n_splits=args.folds, seed=args.seed, group_by=group_by)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    if args.compile_cache and use_compilation_cache(args.compile_cache):
        print(f"XLA compilation cache: {args.compile_cache}")
    print(f"{dataset.name}: {len(dataset)} crystals, {len(folds)} folds {describe_grouping(group_by)} ({why}), "
          f"profile {profile.name}, "
          f"backend {args.backend}")
    rows, folder = [], Path(args.out) / args.backend
    for model in models:  # the tables after each model: an interrupted run keeps every finished row
        rows.append(benchmark_model(model, dataset, folds, profile, args))
        table = write_tables(rows, folder)
    print(markdown(table))
    print(f"wrote {folder / 'cv_models.csv'} and {folder / 'cv_models.md'}")
    failed = table[table["error"].astype(bool)]
    if len(failed):
        sys.exit(f"error: {len(failed)} model(s) failed: {', '.join(failed['model'])}")


if __name__ == "__main__":
    main()
