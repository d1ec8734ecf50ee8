"""Figures of a comparison: bars with error bars, and the critical-difference diagram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mcn.experiment import stats  # noqa: E402
from mcn.experiment.comparison import Comparison  # noqa: E402
from mcn.files import save_figure  # noqa: E402


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
    return save_figure(fig, path)


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
    return save_figure(fig, path, bbox_inches="tight")
