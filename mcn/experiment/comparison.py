"""The statistics of a comparison table: every model's fold scores summarised and tested.

Within one data set (rows: every model, CNNs and classical model x feature set): each metric of
`mcn.metrics.metric_names` as mean and std over folds (all folds of all repeats), parameters, FLOPs,
fit time, inference time per crystal, the model's rank, the corrected resampled t-test against the
best model (Nadeau-Bengio; Bouckaert-Frank with repeats; Holm-adjusted over the comparisons) and the
Bayesian correlated t-test against it: P(better), P(equivalent), P(worse) with a region of
practical equivalence. Fold scores of one data set are correlated, so no rank test runs across
them: `rank_datasets` ranks models across several data sets (Friedman, Nemenyi; Demsar 2006).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mcn.experiment import stats
from mcn.experiment.stats import summarize
from mcn.metrics import metric_names

DEFAULT_RANK_METRIC = "f1_macro"
"""Macro F1 weighs every class equally: crystal classes are imbalanced, so accuracy flatters."""

DEFAULT_ROPE = 0.01
"""Region of practical equivalence of the Bayesian test, in units of the rank metric."""

COMPACT = ("top1", "top2", "f1_macro", "balanced_accuracy", "kappa")
"""The metrics of the printed table; the files hold every metric."""

ALPHA = 0.05


@dataclass
class Comparison:
    """A comparison table of one data set, with what a caption must state."""

    table: pd.DataFrame
    rank_metric: str
    notes: list[str]
    protocol: str = ""
    rope: float = DEFAULT_ROPE
    best: str | None = None


def protocol_text(config: dict) -> str:
    """The split protocol of a benchmark configuration in words (for captions)."""
    from mcn.data.splits import describe_grouping

    parts = [f"{config.get('folds', '?')} folds {describe_grouping(config.get('group_by', 'image'))}"]
    repeats = int(config.get("repeats", 1))
    if repeats > 1:
        parts.append(f"{repeats} repeats with different fold seeds")
    parts.append(f"seed {config.get('seed', '?')}")
    size = config.get("size_features")
    if size:
        parts.append({"nm": "sizes in nm and µm² among the handcrafted inputs",
                      "px": "sizes in pixels among the handcrafted inputs (no pixel size recorded: assumes one "
                            "magnification for every image)",
                      "none": "no size among the handcrafted inputs"}.get(size, f"size features: {size}"))
    if config.get("crossfit"):
        parts.append(f"embeddings of training rows cross-fitted over {config['crossfit']} inner folds")
    return "; ".join(parts)


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
    row["folds"] = len(folds)
    row["params"] = result.get("n_params")
    row["flops"] = result.get("flops")
    row["fit_s"] = np.mean([f["fit_seconds"] for f in folds]) if folds else np.nan
    row["infer_ms"] = 1e3 * np.mean([f["inference_seconds_per_crystal"] for f in folds]) if folds else np.nan
    row["error"] = result.get("error") or ""
    return row


def compare(results: list[dict], rank_metric: str = DEFAULT_RANK_METRIC, rope: float = DEFAULT_ROPE,
            protocol: str = "") -> Comparison:
    """The comparison table of model results (failed models kept as rows with their error)."""
    if not results:
        raise ValueError("no model results to compare")
    if rope < 0:
        raise ValueError(f"--rope must be >= 0; got {rope}")
    class_names = results[0]["class_names"]
    names = metric_names(class_names)
    if rank_metric not in names:
        raise ValueError(f"unknown rank metric {rank_metric!r}; choose one of {', '.join(names)}")
    table = pd.DataFrame([_row(r, names) for r in results])
    ok = [r for r in results if not r.get("error")]
    notes: list[str] = []
    table["rank"] = table[rank_metric].rank(ascending=False, method="min")
    for col in ("p_vs_best", "p_holm", "p_better", "p_equivalent", "p_worse"):
        table[col] = np.nan
    best = None
    if ok:
        best = max(ok, key=lambda r: np.nanmean(fold_scores(r, rank_metric)))
        _significance(table, ok, best, rank_metric, rope)
        n = len(best["folds"])
        notes.append(f"best model by {rank_metric}: {best['model']}; tests against it on the {n} paired fold "
                     f"scores: corrected resampled t-test (Nadeau-Bengio; with repeats the corrected repeated "
                     f"k-fold test of Bouckaert-Frank; Holm-adjusted) and Bayesian correlated t-test "
                     f"(Benavoli et al. 2017, ROPE {rope:g} {rank_metric}); no rank test within one data set: rank models across data "
                     "sets with `python -m benchmarks.table DIR1 DIR2 ...`")
    table = table.sort_values(["rank", "model"], na_position="last").reset_index(drop=True)
    first = ["rank", "model", "family", "features"]
    table = table[first + [c for c in table.columns if c not in first]]
    return Comparison(table, rank_metric, notes, protocol, rope, best["model"] if best else None)


def _significance(table: pd.DataFrame, ok: list[dict], best: dict, metric: str, rope: float) -> None:
    """Each model against the best one: Nadeau-Bengio p (raw, Holm) and the Bayesian probabilities."""
    scores = {r["model"]: fold_scores(r, metric) for r in ok}
    ratio = _test_train_ratio(best)
    _, raw, adjusted = stats.versus_best(scores, ratio)
    table["p_vs_best"] = table["model"].map(raw).astype(float)
    table["p_holm"] = table["model"].map(adjusted).astype(float)
    reference = scores[best["model"]]
    for model, values in scores.items():
        if model == best["model"] or len(values) != len(reference) or np.isnan(values).any():
            continue
        worse, equal, better = stats.bayesian_correlated_ttest(values, reference, ratio / (1 + ratio), rope)
        at = table.index[table["model"] == model]
        table.loc[at, ["p_better", "p_equivalent", "p_worse"]] = better, equal, worse


@dataclass
class DatasetRanking:
    """Models ranked across data sets: scores (data sets x models), mean ranks and the Friedman test."""

    scores: pd.DataFrame
    mean_ranks: pd.Series
    friedman: stats.FriedmanResult | None
    notes: list[str] = field(default_factory=list)


def rank_datasets(comparisons: dict[str, Comparison], rank_metric: str = DEFAULT_RANK_METRIC) -> DatasetRanking:
    """Rank the models every data set scored (mean `rank_metric` over folds) across data sets:
    mean ranks, Friedman test and Nemenyi critical difference (Demsar 2006)."""
    columns = {}
    for name, comparison in comparisons.items():
        ok = comparison.table[comparison.table["error"] == ""]
        columns[name] = ok.set_index("model")[rank_metric]
    scores = pd.DataFrame(columns).T  # data sets x models
    shared = scores.dropna(axis=1)
    notes = []
    dropped = sorted(set(scores.columns) - set(shared.columns))
    if dropped:
        notes.append(f"left out (not scored on every data set): {', '.join(dropped)}")
    if shared.shape[1] < 3 or shared.shape[0] < 2:
        notes.append(f"Friedman test skipped: it needs >= 3 models scored on >= 2 data sets; got "
                     f"{shared.shape[1]} models on {shared.shape[0]} data sets")
        ranks = pd.Series(stats.average_ranks(shared.to_numpy()) if len(shared) else [], index=shared.columns,
                          dtype=float)
        return DatasetRanking(shared, ranks, None, notes)
    result = stats.friedman(shared.to_numpy(), ALPHA)
    verdict = "differ" if result.p_value < ALPHA else "cannot be told apart"
    notes.append(f"Friedman test over {shared.shape[1]} models x {shared.shape[0]} data sets on mean "
                 f"{rank_metric}: chi2 = {result.statistic:.2f}, p = {result.p_value:.3g} (models {verdict} at "
                 f"alpha {ALPHA}); Nemenyi critical difference = {result.critical_difference:.2f} mean ranks")
    return DatasetRanking(shared, pd.Series(result.mean_ranks, index=shared.columns), result, notes)
