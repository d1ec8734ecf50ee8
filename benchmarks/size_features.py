"""`python -m benchmarks.size_features`: what crystal size adds to the handcrafted classifier inputs.

Each classifier runs on the same grouped folds twice: on the handcrafted inputs with size (the
`--size-features` mode the data allows: nm where every crystal has a pixel size) and without
(`none`). Paired on folds, the difference gets the corrected resampled t-test and the Bayesian
correlated t-test (ROPE 0.01). Files in --out: size_features.md (printed), size_features.csv,
folds.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from features.handcrafted import SIZE_FEATURES
from mcn import cli
from mcn.errors import DataError
from mcn.experiment.profiles import PAPER
from mcn.experiment.report import SPREAD, mean_std, to_markdown
from mcn.files import write_text

METRICS = ("f1_macro", "top1")
OUTPUTS = ("size_features.md", "size_features.csv", "folds.csv")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.size_features", description=__doc__.split("\n\n")[0])
    cli.data(p)
    cli.models(p, "xgboost,hist_gb,random_forest")
    cli.size_features(p, choices=[m for m in SIZE_FEATURES if m != "none"])
    cli.folds(p)
    cli.group_by(p)
    cli.seed(p)
    cli.out(p, type=Path, default=Path("mlruns") / "size_features")
    cli.overwrite(p)
    cli.quiet(p)
    cli.jobs(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        text = run(args)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    print(text)
    print(f"files: {', '.join(str(args.out / name) for name in OUTPUTS)}")


def run(args: argparse.Namespace) -> str:
    from features.crossval import cross_validate_classifier
    from features.handcrafted import handcrafted_features, resolve_size_features
    from mcn.data.load import load_dataset
    from mcn.data.splits import describe_grouping, make_folds, resolve_grouping
    from mcn.experiment import stats

    models = [m.partition(":")[0] for m in cli.resolve_models(args.models, PAPER, ("handcrafted",), ("classical",))]
    existing = [name for name in OUTPUTS if (args.out / name).exists()]
    if existing and not args.overwrite:
        raise ValueError(f"{args.out}: already holds {', '.join(existing)}; pass --overwrite to replace them")
    dataset = load_dataset(args.data)
    group_by, why = resolve_grouping(dataset, args.folds, args.group_by)
    folds = make_folds(dataset, args.folds, args.seed, group_by=group_by)
    mode, reason = resolve_size_features(dataset, args.size_features)
    if mode == "none":
        raise ValueError(f"no size mode to compare: {reason}")
    print(f"{dataset.name}: {len(folds)} folds {describe_grouping(group_by)} ({why}); sizes: {mode} ({reason})")
    features = {m: handcrafted_features(dataset, m, args.jobs).to_numpy() for m in (mode, "none")}
    rows = []
    for model in tqdm(models, desc="models", unit="model", disable=args.quiet):
        for m, x in features.items():
            for fold, r in zip(folds, cross_validate_classifier(model, x, dataset.labels, folds, dataset.class_names,
                                                                args.seed, n_jobs=args.jobs)):
                rows.append({"model": model, "sizes": m, "fold": fold.index, "n_features": x.shape[1],
                             "n_test": len(fold.test), "n_train": len(dataset) - len(fold.test),
                             **{k: r["metrics"][k] for k in METRICS}})
    fold_table = pd.DataFrame(rows)
    cells = []
    for model, part in fold_table.groupby("model", sort=False):
        ratio = float((part["n_test"] / part["n_train"]).mean())
        row = {"model": model}
        for metric in METRICS:
            with_size, without = (part[part["sizes"] == m].sort_values("fold")[metric].to_numpy()
                                  for m in (mode, "none"))
            _, p = stats.corrected_resampled_ttest(with_size, without, ratio)
            worse, equal, better = stats.bayesian_correlated_ttest(with_size, without, ratio / (1 + ratio))
            row[f"{metric} with size ({mode})"] = mean_std(with_size.mean(), with_size.std(ddof=1))
            row[f"{metric} without"] = mean_std(without.mean(), without.std(ddof=1))
            row[f"{metric} gain (p; P better/equiv./worse)"] = (f"{with_size.mean() - without.mean():+.3f} "
                                                                f"(p = {p:.3f}; {better:.2f}/{equal:.2f}/{worse:.2f})")
        cells.append(row)
    table = pd.DataFrame(cells)
    caption = (f"{dataset.name}: handcrafted inputs with size ({features[mode].shape[1]} columns) vs without "
               f"({features['none'].shape[1]}), {len(folds)} folds {describe_grouping(group_by)}, seed {args.seed}; "
               f"{SPREAD}; p: Nadeau-Bengio corrected resampled t-test on the paired folds; P: Bayesian correlated "
               "t-test, ROPE ±0.01.")
    text = f"{to_markdown(table)}\n\n{caption}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "folds.csv", fold_table.to_csv(index=False))
    write_text(args.out / "size_features.csv", table.to_csv(index=False))
    write_text(args.out / "size_features.md", text)
    return text


if __name__ == "__main__":
    main()
