"""Significance tests for models compared on the same cross-validation folds.

Fold scores are not independent samples: every pair of training sets shares (K-2)/(K-1) of its
crystals, so a plain paired t-test on K fold scores finds differences that are not there. The
Nadeau-Bengio correction inflates the variance by the test/train size ratio to account for that
overlap. Across many models the Friedman test on per-fold ranks, followed by the Nemenyi critical
difference (Demsar 2006), says which groups of models cannot be told apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats


def corrected_resampled_ttest(scores_a: np.ndarray, scores_b: np.ndarray,
                              test_train_ratio: float) -> tuple[float, float]:
    """Nadeau-Bengio corrected resampled t-test on paired fold scores: (t, two-sided p).

    t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)), d the per-fold differences, J folds,
    J - 1 degrees of freedom. Equal scores on every fold give (0, 1); a constant non-zero
    difference gives (+-inf, 0).
    """
    d = np.asarray(scores_a, float) - np.asarray(scores_b, float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need paired scores from >= 2 folds; got shape {d.shape}")
    if test_train_ratio <= 0:
        raise ValueError(f"test_train_ratio must be > 0; got {test_train_ratio}")
    mean, var = d.mean(), d.var(ddof=1)
    if var == 0:
        return (0.0, 1.0) if mean == 0 else (float(np.sign(mean) * np.inf), 0.0)
    t = mean / np.sqrt((1 / len(d) + test_train_ratio) * var)
    return float(t), float(2 * stats.t.sf(abs(t), len(d) - 1))


def versus_best(scores: dict[str, np.ndarray], test_train_ratio: float) -> tuple[str, dict[str, float], dict[str, float]]:
    """The entry with the highest mean fold score, and every other entry's corrected resampled
    t-test p-value against it, raw and Holm-adjusted. Entries scored on another number of folds
    (or on fewer than two) get no p-value."""
    best = max(scores, key=lambda k: np.nanmean(scores[k]))
    n = len(scores[best])
    others = [k for k in scores if k != best and len(scores[k]) == n >= 2]
    raw = np.array([corrected_resampled_ttest(scores[best], scores[k], test_train_ratio)[1] for k in others])
    return best, dict(zip(others, raw)), dict(zip(others, holm(raw)))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and are not counted)."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Mean rank of each model (columns) over folds (rows); rank 1 = highest score, ties averaged."""
    scores = np.asarray(scores, float)
    return np.mean([stats.rankdata(-row) for row in scores], axis=0)


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman chi-square over folds x models, each model's mean rank, and the Nemenyi CD."""

    statistic: float
    p_value: float
    mean_ranks: np.ndarray
    critical_difference: float


def friedman(scores: np.ndarray, alpha: float = 0.05) -> FriedmanResult:
    """Friedman test on a (folds, models) score matrix plus the Nemenyi critical difference."""
    scores = np.asarray(scores, float)
    n_folds, k = scores.shape
    if k < 3 or n_folds < 2:
        raise ValueError(f"the Friedman test needs >= 3 models and >= 2 folds; got {k} models, {n_folds} folds")
    statistic, p = stats.friedmanchisquare(*scores.T)
    return FriedmanResult(float(statistic), float(p), average_ranks(scores),
                          nemenyi_critical_difference(k, n_folds, alpha))


def nemenyi_critical_difference(k: int, n_folds: int, alpha: float = 0.05) -> float:
    """Two mean ranks differing by more than this are significantly different (Nemenyi test).

    CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the studentized range quantile / sqrt(2).
    """
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6 * n_folds)))


def cliques(mean_ranks: np.ndarray, critical_difference: float) -> list[tuple[int, ...]]:
    """Maximal groups of models (indices) whose mean ranks all lie within the critical difference."""
    order = np.argsort(mean_ranks, kind="stable")
    ranks = np.asarray(mean_ranks)[order]
    groups: list[tuple[int, ...]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and ranks[j + 1] - ranks[i] <= critical_difference:
            j += 1
        group = tuple(int(x) for x in order[i:j + 1])
        if len(group) > 1 and not any(set(group) <= set(g) for g in groups):
            groups.append(group)
    return groups


def summarize(fold_metrics: list[Mapping[str, float]]) -> dict[str, float]:
    """Mean under each metric's own name and standard deviation (ddof=1) as `<name>_std`; undefined
    (NaN) fold values are left out, a single value has std 0."""
    out: dict[str, float] = {}
    names = dict.fromkeys(name for m in fold_metrics for name in m)
    for name in names:
        values = np.array([m.get(name, np.nan) for m in fold_metrics], float)
        values = values[~np.isnan(values)]
        if len(values):
            out[name] = float(values.mean())
            out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out
