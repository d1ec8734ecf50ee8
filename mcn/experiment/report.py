"""Report tables: "mean ± std" cells, Markdown and LaTeX, rendered once for every table of the suite,
and the files of a model comparison (tables, bar chart, critical-difference diagram).

Every table states its spread the same way: the sample standard deviation over all folds of all
repeats (ddof=1), named in `SPREAD` so captions can say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mcn.experiment.comparison import ALPHA, COMPACT, Comparison, DatasetRanking
from mcn.experiment.plots import bar_chart, cd_diagram
from mcn.files import write_text

SPREAD = "mean ± std over all folds of all repeats (sample std, ddof=1)"
"""How every table of the suite states its spread."""


def mean_std(value: float | None, std: float | None = None, digits: int = 3) -> str:
    """`0.812 ± 0.031`; `-` for an undefined value; the mean alone without a std."""
    if value is None or not np.isfinite(float(value)):
        return "-"
    text = f"{float(value):.{digits}f}"
    return text if std is None or not np.isfinite(float(std)) else f"{text} ± {float(std):.{digits}f}"


def mean_std_columns(frame: pd.DataFrame, metrics: list[str], failed: pd.Series | None = None,
                     labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One "mean ± std" string column per metric from `<metric>` and `<metric>_std` columns; rows
    marked in `failed` read "failed"."""
    labels = labels or {}
    out = pd.DataFrame(index=frame.index)
    for m in metrics:
        cells = [mean_std(v, s) for v, s in zip(frame[m], frame[f"{m}_std"])]
        if failed is not None:
            cells = ["failed" if bad else c for c, bad in zip(cells, failed)]
        out[labels.get(m, m)] = cells
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of the frame's cells (as strings)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs LaTeX table of string cells (pandas' Styler, special characters escaped)."""
    cells = frame.astype(str)
    styler = cells.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    text = styler.to_latex(caption=caption.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_"),
                           hrules=True, position="ht", position_float="centering")
    return text.replace("±", r"$\pm$")


def _count(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    value = float(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def _probability(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


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
            cells.update({m: mean_std(row[m], row[f"{m}_std"]) for m in metrics})
        cells.update({"params": _count(row["params"]), "FLOPs": _count(row["flops"]),
                      "fit s": mean_std(row["fit_s"], digits=1), "infer ms": mean_std(row["infer_ms"], digits=2),
                      f"p vs best ({comparison.rank_metric})": _p(row),
                      "P(better)": _probability(row["p_better"]), "P(equiv.)": _probability(row["p_equivalent"]),
                      "P(worse)": _probability(row["p_worse"])})
        rows.append(cells)
    return pd.DataFrame(rows)


def caption(comparison: Comparison) -> str:
    """What every comparison table states: protocol, spread, the tests and the ROPE."""
    protocol = f"{comparison.protocol}; " if comparison.protocol else ""
    return (f"{protocol}{SPREAD}; tests against the best model ({comparison.best or '-'}) on "
            f"{comparison.rank_metric}: p = Nadeau-Bengio corrected resampled t-test (Bouckaert-Frank with "
            f"repeats), * = significant after Holm's adjustment at alpha {ALPHA}; P(better / equiv. / worse) = "
            f"Bayesian correlated t-test (Benavoli et al. 2017), ROPE ±{comparison.rope:g}")


def write_tables(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    """comparison.{md,csv,tex} and the bar chart under `out_dir`; their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = display_frame(comparison)
    notes = "\n".join(f"- {n}" for n in comparison.notes)
    legend = caption(comparison)
    paths = {"markdown": out_dir / "comparison.md", "csv": out_dir / "comparison.csv",
             "latex": out_dir / "comparison.tex", "chart": out_dir / "comparison.png"}
    write_text(paths["markdown"], f"{to_markdown(frame)}\n\n{legend}\n\n{notes}\n")
    write_text(paths["csv"], comparison.table.to_csv(index=False))
    write_text(paths["latex"], to_latex(frame, f"Model comparison; {legend}.") + "\n")
    bar_chart(comparison, paths["chart"])
    return paths


def write_ranking(ranking: DatasetRanking, out_dir: Path, rank_metric: str) -> dict[str, Path]:
    """ranking.{md,csv} (mean rank of each model across data sets) and, with a Friedman result, the
    critical-difference diagram, under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = ranking.scores.T.map(lambda v: f"{v:.3f}")
    cells.insert(0, "mean rank", ranking.mean_ranks.map(lambda v: f"{v:.2f}"))
    cells = cells.loc[ranking.mean_ranks.sort_values().index].reset_index(names="model")
    legend = (f"mean {rank_metric} over the folds of each data set; models ranked per data set, ranks averaged "
              "over data sets (Demsar 2006)")
    notes = "\n".join(f"- {n}" for n in ranking.notes)
    paths = {"markdown": out_dir / "ranking.md", "csv": out_dir / "ranking.csv"}
    write_text(paths["markdown"], f"{to_markdown(cells)}\n\n{legend}\n\n{notes}\n")
    write_text(paths["csv"], cells.to_csv(index=False))
    if ranking.friedman is not None:
        paths["cd_diagram"] = cd_diagram(
            ranking.mean_ranks.to_numpy(), list(ranking.mean_ranks.index), ranking.friedman.critical_difference,
            out_dir / "critical_difference.png",
            f"Mean rank on {rank_metric} over {len(ranking.scores)} data sets "
            f"(Friedman p = {ranking.friedman.p_value:.3g})")
    return paths


def compact_markdown(comparison: Comparison) -> str:
    """The printed table: the headline metrics plus cost and significance columns."""
    return to_markdown(display_frame(comparison, list(COMPACT)))
