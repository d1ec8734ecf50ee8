"""The statistics of a comparison table: every model's fold scores summarised and tested.

Rows: every model (CNNs; classical model x feature set). Columns: each metric of
`mcn.metrics.metric_names` as mean and std over folds, parameters, FLOPs, fit time, inference time
per crystal, the model's rank, its mean Friedman rank over folds, and a Nadeau-Bengio corrected
resampled t-test against the best model (Holm-adjusted over the comparisons).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mcn.experiment import stats
from mcn.experiment.stats import summarize
from mcn.metrics import metric_names

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
    summary = summarize([f["metrics"] for f in folds]) if folds else {}
    for name in names:
        row[name] = summary.get(name, np.nan)
        row[f"{name}_std"] = summary.get(f"{name}_std", np.nan)
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
