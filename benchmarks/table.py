"""The comparison table of a benchmark, made from its result files (no retraining needed).

Rows: every model (CNNs; classical model x feature set). Columns: each metric of
`mcn.metrics.metric_names` as mean and std over folds, parameters, FLOPs, fit time, inference time
per crystal, the model's rank, its mean Friedman rank over folds, and a Nadeau-Bengio corrected
resampled t-test against the best model (Holm-adjusted over the comparisons). A Friedman test with
the Nemenyi critical difference summarises all models at once; its diagram and a bar chart with
error bars are PNGs. Written as Markdown, CSV and LaTeX.

Remake a table: `python -m benchmarks.table OUT_DIR [--rank-metric f1_macro]`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks import results as results_io  # noqa: E402
from benchmarks import stats  # noqa: E402
from mcn.metrics import metric_names  # noqa: E402
from mcn.files import write_text

DEFAULT_RANK_METRIC = "f1_macro"
"""Macro F1 weighs every class equally: crystal classes are imbalanced, so accuracy flatters."""

COMPACT = ("top1", "top2", "f1_macro", "balanced_accuracy", "kappa")
"""The metrics of the printed table; the files hold every metric."""

ALPHA = 0.05


@dataclass
class Comparison:
    """A comparison table plus its Friedman summary (None with fewer than 3 models)."""

    table: pd.DataFrame
    rank_metric: str
    friedman: stats.FriedmanResult | None
    friedman_models: list[str]
    notes: list[str]


def fold_scores(result: dict, metric: str) -> np.ndarray:
    """Per-fold values of `metric`, in fold order."""
    folds = sorted(result["folds"], key=lambda f: f["fold"])
    return np.array([f["metrics"].get(metric, np.nan) for f in folds], float)


def _test_train_ratio(result: dict) -> float:
    """n_test / n_train for the Nadeau-Bengio correction, averaged over folds."""
    folds = result["folds"]
    return float(np.mean([f["n_test"] for f in folds]) / np.mean([f["n_train"] for f in folds]))


def _row(result: dict, names: list[str]) -> dict:
    row = {"model": result["model"], "family": result["family"], "features": result["feature_set"]}
    folds = result.get("folds") or []
    for name in names:
        values = np.array([f["metrics"].get(name, np.nan) for f in folds], float)
        values = values[~np.isnan(values)]
        row[name] = values.mean() if len(values) else np.nan
        row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else (0.0 if len(values) else np.nan)
    row["params"] = result.get("n_params")
    row["flops"] = result.get("flops")
    row["fit_s"] = np.mean([f["fit_seconds"] for f in folds]) if folds else np.nan
    row["infer_ms"] = 1e3 * np.mean([f["inference_seconds_per_crystal"] for f in folds]) if folds else np.nan
    row["error"] = result.get("error") or ""
    return row


def compare(results: list[dict], rank_metric: str = DEFAULT_RANK_METRIC) -> Comparison:
    """The comparison table of model results (failed models kept as rows with their error)."""
    if not results:
        raise ValueError("no model results to compare")
    class_names = results[0]["class_names"]
    names = metric_names(class_names)
    if rank_metric not in names:
        raise ValueError(f"unknown rank metric {rank_metric!r}; choose one of {', '.join(names)}")
    table = pd.DataFrame([_row(r, names) for r in results])
    ok = [r for r in results if not r.get("error")]
    notes: list[str] = []
    table["rank"] = table[rank_metric].rank(ascending=False, method="min")
    for col in ("mean_rank", "p_vs_best", "p_holm"):
        table[col] = np.nan
    friedman, friedman_models = None, []
    if ok:
        best = max(ok, key=lambda r: np.nanmean(fold_scores(r, rank_metric)))
        _significance(table, ok, best, rank_metric)
        friedman, friedman_models = _friedman(table, ok, rank_metric, notes)
        notes.insert(0, f"best model by {rank_metric}: {best['model']}")
    table = table.sort_values(["rank", "model"], na_position="last").reset_index(drop=True)
    first = ["rank", "model", "family", "features"]
    table = table[first + [c for c in table.columns if c not in first]]
    return Comparison(table, rank_metric, friedman, friedman_models, notes)


def _significance(table: pd.DataFrame, ok: list[dict], best: dict, metric: str) -> None:
    """Nadeau-Bengio p-value of each model against the best one, then Holm's adjustment."""
    scores = {r["model"]: fold_scores(r, metric) for r in ok}
    _, raw, adjusted = stats.versus_best(scores, _test_train_ratio(best))
    table["p_vs_best"] = table["model"].map(raw).astype(float)
    table["p_holm"] = table["model"].map(adjusted).astype(float)


def _friedman(table: pd.DataFrame, ok: list[dict], metric: str,
              notes: list[str]) -> tuple[stats.FriedmanResult | None, list[str]]:
    n_folds = max(len(r["folds"]) for r in ok)
    complete = [r for r in ok if len(r["folds"]) == n_folds and not np.isnan(fold_scores(r, metric)).any()]
    if len(complete) < 3 or n_folds < 2:
        notes.append("Friedman test skipped: it needs >= 3 models scored on >= 2 folds")
        return None, []
    scores = np.column_stack([fold_scores(r, metric) for r in complete])
    result = stats.friedman(scores, ALPHA)
    models = [r["model"] for r in complete]
    table["mean_rank"] = table["model"].map(dict(zip(models, result.mean_ranks)))
    verdict = "differ" if result.p_value < ALPHA else "cannot be told apart"
    notes.append(f"Friedman test over {len(models)} models x {n_folds} folds on {metric}: "
                 f"chi2 = {result.statistic:.2f}, p = {result.p_value:.3g} (models {verdict} at alpha {ALPHA}); "
                 f"Nemenyi critical difference = {result.critical_difference:.2f} mean ranks")
    return result, models


def _fmt(value: float, std: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    return text if std is None or np.isnan(std) else f"{text} ± {std:.{digits}f}"


def _count(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    value = float(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def _p(row: pd.Series) -> str:
    if row["rank"] == 1 and np.isnan(row["p_vs_best"]):
        return "best"
    if np.isnan(row["p_vs_best"]):
        return "-"
    star = "*" if row["p_holm"] < ALPHA else ""
    return f"{row['p_vs_best']:.3f}{star}"


def display_frame(comparison: Comparison, metrics: list[str] | None = None) -> pd.DataFrame:
    """Human-readable cells: mean ± std, counts with units, p-values with * (Holm-significant)."""
    table = comparison.table
    metrics = metrics or [c for c in table.columns if f"{c}_std" in table.columns]
    rows = []
    for _, row in table.iterrows():
        cells = {"rank": "-" if np.isnan(row["rank"]) else f"{row['rank']:.0f}",
                 "model": row["model"], "features": row["features"]}
        if row["error"]:
            cells.update({m: "failed" for m in metrics})
        else:
            cells.update({m: _fmt(row[m], row[f"{m}_std"]) for m in metrics})
        cells.update({"params": _count(row["params"]), "FLOPs": _count(row["flops"]),
                      "fit s": _fmt(row["fit_s"], digits=1), "infer ms": _fmt(row["infer_ms"], digits=2),
                      "mean rank": _fmt(row["mean_rank"], digits=2),
                      f"p vs best ({comparison.rank_metric})": _p(row)})
        rows.append(cells)
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of string cells."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs LaTeX table of string cells."""
    def esc(text: str) -> str:
        text = str(text).replace("\\", r"\textbackslash{}")
        for ch in "&%$#_{}":
            text = text.replace(ch, "\\" + ch)
        return text.replace("±", r"$\pm$")

    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{esc(caption)}}}",
             r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule",
             " & ".join(esc(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def bar_chart(comparison: Comparison, path: Path) -> Path:
    """Horizontal bars of the rank metric, mean ± std over folds, best on top, colour per family."""
    table = comparison.table[comparison.table["error"] == ""].iloc[::-1]
    metric = comparison.rank_metric
    colours = {"cnn": "tab:blue", "classical": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(table)))
    ax.barh(table["model"], table[metric], xerr=table[f"{metric}_std"], capsize=2,
            color=[colours.get(f, "tab:grey") for f in table["family"]])
    ax.set_xlabel(f"{metric} (mean ± std over folds)")
    ax.set_xlim(0, 1.05 * max(1.0, float(np.nanmax(table[metric] + table[f"{metric}_std"]))) if len(table) else 1)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, ["CNN", "classical"], loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cd_diagram(mean_ranks: np.ndarray, names: list[str], critical_difference: float, path: Path,
               title: str = "") -> Path:
    """Critical-difference diagram (Demsar 2006): a rank axis, each model's mean rank, and bars
    joining groups of models whose mean ranks lie within the Nemenyi critical difference."""
    k = len(names)
    order = np.argsort(mean_ranks, kind="stable")
    half = (k + 1) // 2
    groups = stats.cliques(mean_ranks, critical_difference)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.3 * half + 0.1 * len(groups)))
    ax.set_xlim(-0.5 - 0.1 * k, k + 1.5 + 0.1 * k)
    ax.axis("off")
    top = 0.0
    ax.hlines(top, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, top, top + 0.1, color="black", lw=1)
        ax.text(r, top + 0.15, str(r), ha="center", va="bottom", fontsize=8)
    ax.hlines(top + 0.6, 1, 1 + critical_difference, color="black", lw=2)
    ax.text(1 + critical_difference / 2, top + 0.65, f"CD = {critical_difference:.2f}", ha="center",
            va="bottom", fontsize=8)
    for i, idx in enumerate(order):
        rank = mean_ranks[idx]
        left = i < half
        y = -0.3 - 0.1 * len(groups) - 0.25 * (i if left else k - 1 - i)
        x_text = 0.6 if left else k + 0.4
        ax.plot([rank, rank, x_text], [top, y, y], color="black", lw=0.8)
        ax.text(x_text, y, f"{names[idx]} ({rank:.2f})", ha="right" if left else "left", va="center",
                fontsize=8)
    for j, group in enumerate(groups):
        lo, hi = min(mean_ranks[g] for g in group), max(mean_ranks[g] for g in group)
        y = -0.15 - 0.1 * j
        ax.hlines(y, lo - 0.05, hi + 0.05, color="tab:red", lw=3)
    ax.set_ylim(-0.4 - 0.25 * half - 0.2 * len(groups), top + 1.0)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_tables(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    """comparison.{md,csv,tex}, the bar chart and the CD diagram under `out_dir`; their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = display_frame(comparison)
    notes = "\n".join(f"- {n}" for n in comparison.notes)
    legend = ("mean ± std over folds; p vs best: Nadeau-Bengio corrected resampled t-test, "
              "* = significant after Holm's adjustment at alpha 0.05")
    paths = {"markdown": out_dir / "comparison.md", "csv": out_dir / "comparison.csv",
             "latex": out_dir / "comparison.tex", "chart": out_dir / "comparison.png"}
    write_text(paths["markdown"], f"{to_markdown(frame)}\n\n{legend}\n\n{notes}\n")
    write_text(paths["csv"], comparison.table.to_csv(index=False))
    write_text(paths["latex"], to_latex(frame, f"Model comparison; {legend}.") + "\n")
    bar_chart(comparison, paths["chart"])
    if comparison.friedman is not None:
        paths["cd_diagram"] = cd_diagram(
            comparison.friedman.mean_ranks, comparison.friedman_models,
            comparison.friedman.critical_difference, out_dir / "critical_difference.png",
            f"Mean rank on {comparison.rank_metric} (Friedman p = {comparison.friedman.p_value:.3g})")
    return paths



def compact_markdown(comparison: Comparison) -> str:
    """The printed table: the headline metrics plus cost and significance columns."""
    return to_markdown(display_frame(comparison, list(COMPACT)))


def main(argv: list[str] | None = None) -> None:
    """Re-make the comparison table of a benchmark output folder from its result files."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table", description=main.__doc__)
    parser.add_argument("out", type=Path, help="a benchmark output folder (holds results/*.json)")
    parser.add_argument("--rank-metric", default=DEFAULT_RANK_METRIC, help="metric that ranks the models")
    args = parser.parse_args(argv)
    found = results_io.load_results(args.out)
    if not found:
        sys.exit(f"error: {args.out}: no result files under {args.out / results_io.RESULTS_DIR}")
    try:
        comparison = compare(found, args.rank_metric)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    paths = write_tables(comparison, args.out)
    print(compact_markdown(comparison))
    print("\n".join(comparison.notes))
    print(f"tables: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
