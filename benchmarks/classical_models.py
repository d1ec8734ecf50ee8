"""Every classical model x feature set on the suite's grouped folds: a mean +- std table.

`python -m benchmarks.classical_models` runs the model zoo on handcrafted features of the default
synthetic data set over 5 grouped folds (the folds every CNN of a run gets, from `make_folds`) and
writes into `--out`: folds.csv (one row per model, feature set and fold, with every metric),
summary.csv / summary.md (mean +- std top-1 and macro F1, mean fit seconds), and XGBoost feature
importance of the handcrafted features (importance.csv, importance.png, averaged over folds).
With `--embeddings RUN_DIR` (an `mcn.train` cross-validation folder of the same data set and folds)
the embedding and hybrid feature sets run too. A model that fails records its error; the rest go on.
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before keras is first imported)

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from features.crossval import cross_validate_classifier, training_index
from features.embeddings import FEATURE_SETS, fold_features, load_fold_embeddings
from mcn.experiment.report import mean_std_columns
from mcn.experiment.profiles import PAPER
from mcn.experiment.stats import mean_importance, summarize
from mcn.experiment.report import to_markdown as markdown_table
from mcn.files import write_text
from features.importance import importance_table, plot_importance
from features.handcrafted import handcrafted_features, resolve_size_features
from mcn import cli
from mcn.data.load import load_dataset
from mcn.data.splits import describe_grouping, make_folds, resolve_grouping
from mcn.errors import DataError
from mcn.metrics import metric_names

OUTPUTS = ("folds.csv", "summary.csv", "summary.md", "importance.csv", "importance.png")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.classical_models",
                                description=__doc__.split("\n")[0])
    cli.data(p)
    cli.out(p, default="mlruns/classical")
    cli.folds(p)
    cli.seed(p)
    cli.group_by(p)
    cli.models(p, default_text="every classifier on the feature sets there are (handcrafted; all three with "
                               "--embeddings)")
    cli.size_features(p)
    p.add_argument("--embeddings", default=None,
                   help="mcn.train cross-validation folder (fold_k/) whose embeddings add the "
                        "embedding and hybrid feature sets")
    cli.overwrite(p)
    cli.jobs(p)
    cli.quiet(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.overwrite:
        raise DataError(f"{out}: already holds {', '.join(existing)}; pass --overwrite to replace them")
    feature_sets = FEATURE_SETS if args.embeddings else ("handcrafted",)
    chosen = cli.resolve_models(args.models, PAPER, feature_sets, kinds=("classical",))
    dataset = load_dataset(args.data)
    group_by, why = resolve_grouping(dataset, args.folds, args.group_by)
    print(f"folds: {describe_grouping(group_by)} ({why})")
    folds = make_folds(dataset, n_splits=args.folds, seed=args.seed, group_by=group_by)
    size_features, why = resolve_size_features(dataset, args.size_features)
    print(f"size features: {size_features} ({why})")
    started = time.perf_counter()
    handcrafted = handcrafted_features(dataset, size_features, n_jobs=args.jobs)
    print(f"{dataset.name}: {len(dataset)} crystals, {handcrafted.shape[1]} handcrafted features in "
          f"{time.perf_counter() - started:.1f} s; {len(folds)} grouped folds")
    embeddings = load_fold_embeddings(args.embeddings, len(dataset), folds, dataset.fingerprint()) \
        if args.embeddings else None

    rows = []
    classifiers = dict.fromkeys(m.partition(":")[0] for m in chosen)
    jobs = [(fs, clf) for fs in feature_sets for clf in classifiers if f"{clf}:{fs}" in chosen]
    for feature_set, model in tqdm(jobs, desc="classical models", unit="model", disable=args.quiet):
        rows += _evaluate(model, feature_set, fold_features(feature_set, handcrafted, embeddings),
                          dataset, folds, args.seed, args.jobs)
    out.mkdir(parents=True, exist_ok=True)
    fold_table = pd.DataFrame(rows)
    summary = summarise(fold_table)
    write_text(out / "folds.csv", fold_table.to_csv(index=False))
    write_text(out / "summary.csv", summary.to_csv(index=False))
    write_text(out / "summary.md", to_markdown(summary))

    importance = mean_importance([
        importance_table(handcrafted.to_numpy()[training_index(f)], dataset.labels[training_index(f)],
                         handcrafted.to_numpy()[f.test], dataset.labels[f.test], list(handcrafted.columns),
                         seed=args.seed) for f in tqdm(folds, desc="importance", unit="fold", disable=args.quiet)])
    write_text(out / "importance.csv", importance.to_csv(index=False))
    plot_importance(importance, out / "importance.png",
                    title=f"XGBoost on handcrafted features, {dataset.name}, mean of {len(folds)} folds")
    print(to_markdown(summary))
    failed = fold_table["error"].notna().sum() if "error" in fold_table else 0
    print(f"wrote {', '.join(OUTPUTS)} to {out}" + (f"; {failed} model(s) failed (see folds.csv)" if failed else ""))


def _evaluate(model: str, feature_set: str, features, dataset, folds, seed: int, n_jobs: int) -> list[dict]:
    """Per-fold rows of one model on one feature set, or one row holding its error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # absent classes: reported via metrics
            results = cross_validate_classifier(model, features, dataset.labels, folds, dataset.class_names, seed,
                                                n_jobs=n_jobs)
    except Exception as exc:  # one failing model must not cost the whole table
        tqdm.write(f"{model} on {feature_set}: failed: {exc}")
        return [{"model": model, "feature_set": feature_set, "error": f"{type(exc).__name__}: {exc}"}]
    names = metric_names(dataset.class_names)
    return [{"model": model, "feature_set": feature_set, "fold": r["fold"], "n_train": r["n_train"],
             "n_test": len(r["test_index"]), "n_features": r["n_features"], "fit_seconds": r["fit_seconds"],
             "predict_seconds": r["predict_seconds"], **{k: r["metrics"][k] for k in names}} for r in results]


def summarise(fold_table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over folds (ddof=1) of top-1 and macro F1, and mean fit seconds, per model and
    feature set, best macro F1 first."""
    if "fold" not in fold_table:
        raise ValueError("every model failed; see the messages above")
    rows = []
    for (model, feature_set), group in fold_table.dropna(subset=["fold"]).groupby(["model", "feature_set"], sort=False):
        stats = summarize(group[["top1", "f1_macro", "fit_seconds"]].to_dict("records"))
        rows.append({"model": model, "feature_set": feature_set, **stats, "folds": len(group)})
    return pd.DataFrame(rows).sort_values("f1_macro", ascending=False, ignore_index=True)


def to_markdown(summary: pd.DataFrame) -> str:
    """The summary with "mean ± std" cells."""
    cells = summary[["model", "feature_set"]].rename(columns={"feature_set": "features"})
    cells = cells.join(mean_std_columns(summary, ["top1", "f1_macro"], labels={"top1": "top-1", "f1_macro": "macro F1"}))
    cells["fit s/fold"] = [f"{s:.2f}" for s in summary["fit_seconds"]]
    return markdown_table(cells) + "\n"


if __name__ == "__main__":
    main()
