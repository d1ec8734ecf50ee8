"""`python -m mcn.train`: one CNN by grouped cross-validation (or the 80/10/10 holdout), with every
figure of the paper."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mcn
from mcn.data.splits import describe_grouping, make_folds, resolve_grouping
from mcn import checks, cli
from mcn.errors import DataError, exit_interrupted
from mcn.train.backend import resolve_backend
from mcn.train.config import OPTIMIZERS, TrainConfig
from mcn.train.folds import RESULT_FILE, ResumeError, fold_dir
from mcn.train.protocol import cross_validate


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
    cli.data(p)
    p.add_argument("--model", default="microcrystalnet", help="registry name (default: %(default)s)")
    split = p.add_mutually_exclusive_group()
    cli.folds(p, container=split)
    split.add_argument("--holdout", action="store_true",
                       help="one split instead of CV: a pre-split folder's own, else grouped 80/10/10")
    cli.group_by(p)
    cli.epochs(p, defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.learning_rate, help="initial learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    p.add_argument("--lr-patience", type=int, default=defaults.lr_patience)
    p.add_argument("--patience", type=int, default=defaults.early_stopping_patience,
                   help="early-stopping patience in epochs (default: %(default)s)")
    p.add_argument("--no-balance", action="store_true", help="do not balance classes by rotated copies")
    cli.input_size(p, default_text="the model's")
    p.add_argument("--recalibrate-bn", action="store_true",
                   help="re-estimate BatchNorm statistics on training patches after training (short budgets)")
    cli.seed(p, defaults.seed)
    cli.hparam(p)
    cli.pixel_size_nm(p, default_text="images.csv, then the image's metadata; this flag wins over both")
    cli.out(p, default_text="mlruns/train/<model>_<data set name>")
    cli.backend(p, auto=True)
    cli.overwrite(p)
    p.add_argument("--no-report", action="store_true", help="skip the figures (metrics are still written)")
    cli.quiet(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.backend = resolve_backend(args.backend, [args.model])
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
        if published:
            folds, split = [published], "the data set's own train/val/test split"
        else:
            group_by, why = resolve_grouping(dataset, 2 if args.holdout else args.folds, args.group_by)
            folds = make_folds(dataset, n_splits=args.folds, seed=args.seed, holdout=args.holdout, group_by=group_by)
            split = f"{describe_grouping(group_by)} ({why})"
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        exit_interrupted("before training; nothing to resume")
    out_dir = Path(args.out or Path("mlruns") / "train" / f"{args.model}_{dataset.name}")
    print(f"{dataset.name}: {len(dataset)} crystals {dataset.class_counts()}, {len(folds)} fold(s) {split}, "
          f"{args.model} on {args.backend} -> {out_dir}")
    try:
        results = cross_validate(args.model, dataset, folds, config, hparams, out_dir,
                                 resume=not args.overwrite, progress=not args.quiet)
    except (DataError, ResumeError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        done = sum((fold_dir(out_dir, f.index) / RESULT_FILE).is_file() for f in folds)
        exit_interrupted(f"{done} of {len(folds)} fold(s) saved in {out_dir}; rerun the same command to resume")
    write_report(results, dataset, out_dir, figures=not args.no_report, progress=not args.quiet)
    print(f"done: {out_dir}")

