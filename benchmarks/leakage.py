"""`python -m benchmarks.leakage`: how much a looser split inflates the scores, on one data set.

The same models, the same seed and the same metric function under three splits: a random
per-crystal split (what the paper did: sibling crystals of one image on both sides), folds grouped
by source image, and folds grouped by rock sample (where the data records samples). The table gives
mean ± std (sample std, ddof=1) over folds of top-1 and macro-F1 per model and split, and how far
each looser split lies above the strictest one, with a corrected t-test between the two
cross-validation runs (`mcn.experiment.stats.corrected_unpaired_ttest`: the splits are different
partitions, so the folds are not paired). It tells a user how far to trust published numbers.

Default models: XGBoost on handcrafted features (the suite's best classical model) and
MicroCrystalNet at the profile's budget. CNN folds are kept under --out and resumed on a rerun.
Files in --out: leakage.md (printed), leakage.csv, folds.csv, leakage.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import mcn
from mcn import cli
from mcn.errors import DataError
from mcn.experiment import profiles
from mcn.experiment.report import SPREAD, mean_std, to_markdown
from mcn.files import save_figure, write_text

SPLITS = ("crystal", "image", "sample")
METRICS = ("top1", "f1_macro")
DEFAULT_MODELS = "xgboost:handcrafted,microcrystalnet"
OUTPUTS = ("leakage.md", "leakage.csv", "folds.csv", "leakage.png")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.leakage", description=__doc__.split("\n\n")[0])
    cli.data(p)
    cli.models(p, DEFAULT_MODELS)
    cli.folds(p)
    cli.seed(p)
    cli.profile(p)
    cli.backend(p)
    cli.size_features(p)
    cli.out(p, type=Path, default_text="mlruns/leakage/<data set>-seed<seed>")
    cli.overwrite(p)
    cli.jobs(p)
    cli.quiet(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        mcn.select_backend(args.backend)
        folds_by_split, dataset, models, out, profile = _setup(args)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    rows = []
    for model in tqdm(models, desc="models", unit="model", disable=args.quiet):
        for split, folds in folds_by_split.items():
            rows += _scores(model, split, folds, dataset, profile, args, out)
    fold_table = pd.DataFrame(rows)
    table = summarise(fold_table, len(dataset))
    title = (f"{dataset.name}: {args.folds} folds per split, seed {args.seed}, profile {profile.name}")
    write_text(out / "folds.csv", fold_table.to_csv(index=False))
    write_text(out / "leakage.csv", table.to_csv(index=False))
    text = f"{markdown(table)}\n\n{caption(title)}\n"
    write_text(out / "leakage.md", text)
    plot(table, out / "leakage.png", title)
    print(text)
    print(f"files: {', '.join(str(out / name) for name in OUTPUTS)}")


def _setup(args):
    from mcn.data.load import load_dataset
    from mcn.data.splits import describe_grouping, make_folds, resolve_grouping

    profile = profiles.get_profile(args.profile) if args.profile else profiles.default_profile(args.backend)[0]
    models = cli.resolve_models(args.models, profile, ("handcrafted",))
    if args.data is not None and not Path(args.data).exists():
        raise DataError(f"{args.data}: no such data set folder")
    dataset = load_dataset(args.data)
    folds_by_split = {}
    for split in SPLITS:
        try:
            group_by, _ = resolve_grouping(dataset, args.folds, split)
        except ValueError as exc:
            print(f"split {split}: skipped ({exc})")
            continue
        folds_by_split[group_by] = make_folds(dataset, args.folds, args.seed, group_by=group_by)
        print(f"split {split}: {args.folds} folds {describe_grouping(group_by)}")
    if len(folds_by_split) < 2:
        raise ValueError("fewer than two splits are possible on this data set: nothing to compare")
    out = args.out or Path("mlruns") / "leakage" / f"{dataset.name}-seed{args.seed}"
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.overwrite:
        raise ValueError(f"{out}: already holds {', '.join(existing)}; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    print(f"data: {dataset.name} ({len(dataset)} crystals); models {', '.join(models)}; profile {profile.name}; "
          f"results in {out}")
    return folds_by_split, dataset, models, out, profile


_FEATURES: dict = {}


def _scores(model: str, split: str, folds, dataset, profile, args, out: Path) -> list[dict]:
    """One row per fold: model, split, fold, n_train, n_test and the metrics."""
    if ":" in model:
        from features.crossval import cross_validate_classifier
        from features.handcrafted import handcrafted_features

        if "handcrafted" not in _FEATURES:
            _FEATURES["handcrafted"] = handcrafted_features(dataset, args.size_features, args.jobs).to_numpy()
        clf = model.partition(":")[0]
        fitted = cross_validate_classifier(clf, _FEATURES["handcrafted"], dataset.labels, folds,
                                           dataset.class_names, args.seed, n_jobs=args.jobs)
        metrics = [r["metrics"] for r in fitted]
    else:
        from mcn.train import TrainConfig, cross_validate

        config = TrainConfig(**profile.train_kwargs(model), seed=args.seed)
        fitted = cross_validate(model, dataset, folds, config, profile.model_hparams(model),
                                out / "cnn" / model / split, resume=not args.overwrite, progress=not args.quiet)
        metrics = [r.metrics for r in fitted]
    return [{"model": model, "split": split, "fold": f.index, "n_test": len(f.test),
             "n_train": len(dataset) - len(f.test), **{k: m[k] for k in METRICS}} for f, m in zip(folds, metrics)]


def summarise(fold_table: pd.DataFrame, n_crystals: int) -> pd.DataFrame:
    """Per model and split: mean and std (ddof=1) of each metric, and the inflation over the strictest
    split of that model (difference of means, corrected unpaired t-test p-value)."""
    from mcn.experiment.stats import corrected_unpaired_ttest

    rows = []
    for model, by_model in fold_table.groupby("model", sort=False):
        splits = [s for s in SPLITS if s in set(by_model["split"])]
        strict = by_model[by_model["split"] == splits[-1]]
        for split in splits:
            part = by_model[by_model["split"] == split]
            row = {"model": model, "split": split, "folds": len(part), "strictest": splits[-1]}
            for metric in METRICS:
                row[metric], row[f"{metric}_std"] = part[metric].mean(), part[metric].std(ddof=1)
                if split == splits[-1]:
                    row[f"{metric}_inflation"], row[f"{metric}_p"] = 0.0, np.nan
                    continue
                ratio = lambda p: float(p["n_test"].mean() / p["n_train"].mean())  # noqa: E731
                _, p = corrected_unpaired_ttest(part[metric].to_numpy(), strict[metric].to_numpy(),
                                                ratio(part), ratio(strict))
                row[f"{metric}_inflation"] = row[metric] - strict[metric].mean()
                row[f"{metric}_p"] = p
            rows.append(row)
    return pd.DataFrame(rows)


SPLIT_NAMES = {"crystal": "random per crystal", "image": "grouped by image", "sample": "grouped by sample"}


def markdown(table: pd.DataFrame) -> str:
    cells = pd.DataFrame({"model": table["model"], "split": table["split"].map(SPLIT_NAMES)})
    for metric, label in (("top1", "top-1"), ("f1_macro", "macro-F1")):
        cells[label] = [mean_std(v, s) for v, s in zip(table[metric], table[f"{metric}_std"])]
        cells[f"{label} inflation (p)"] = [
            "reference" if split == strict else f"{d:+.3f} (p = {p:.3f})"
            for split, strict, d, p in zip(table["split"], table["strictest"], table[f"{metric}_inflation"],
                                           table[f"{metric}_p"])]
    cells["folds"] = table["folds"]
    return to_markdown(cells)


def caption(title: str) -> str:
    return (f"{title}. {SPREAD}. Inflation: mean score minus the mean under the strictest split of the same "
            "model; p: corrected t-test between the two cross-validation runs (Nadeau-Bengio variance of each "
            "run, Welch degrees of freedom; the splits' folds are not paired).")


def plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Bars per model and metric, one per split, error bars = std over folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(table["model"]))
    splits = [s for s in SPLITS if s in set(table["split"])]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.5 * len(METRICS), 3.8), sharey=True)
    width = 0.8 / len(splits)
    for ax, metric in zip(np.atleast_1d(axes), METRICS):
        x = np.arange(len(models))
        for i, split in enumerate(splits):
            part = table[table["split"] == split].set_index("model").reindex(models)
            ax.bar(x + (i - (len(splits) - 1) / 2) * width, part[metric], width, yerr=part[f"{metric}_std"],
                   capsize=3, label=SPLIT_NAMES[split])
        ax.set_xticks(x, models, rotation=15, ha="right")
        ax.set_title(metric)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mean ± std over folds")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
