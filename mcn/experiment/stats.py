"""Significance tests for models compared on the same cross-validation folds, and across data sets.

Fold scores are not independent samples: every pair of training sets shares (K-2)/(K-1) of its
crystals, so a plain paired t-test on K fold scores finds differences that are not there. Within one
data set the suite uses tests built for that: the Nadeau-Bengio corrected resampled t-test (with R
repeats of K folds it is Bouckaert and Frank's corrected repeated k-fold test: variance factor
1/(K R) + n_test/n_train, K R - 1 degrees of freedom) and the Bayesian correlated t-test with a
region of practical equivalence (Benavoli et al. 2017). The Friedman test on ranks and the Nemenyi
critical difference (Demsar 2006) assume independent data sets: they rank models ACROSS data sets,
never across the folds of one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


def corrected_resampled_ttest(scores_a: np.ndarray, scores_b: np.ndarray,
                              test_train_ratio: float) -> tuple[float, float]:
    """Nadeau-Bengio corrected resampled t-test on paired fold scores: (t, two-sided p).

    t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)), d the per-fold differences, J folds,
    J - 1 degrees of freedom. With the J = K R folds of R repeated K-fold runs this is the corrected
    repeated k-fold t-test (Bouckaert and Frank 2004). Equal scores on every fold give (0, 1); a
    constant non-zero difference gives (+-inf, 0).
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


def bayesian_correlated_ttest(scores_a: np.ndarray, scores_b: np.ndarray, test_fraction: float,
                              rope: float = 0.01) -> tuple[float, float, float]:
    """Posterior probabilities (a worse, practically equivalent, a better) than b.

    Benavoli, Corani, Demsar and Zaffalon (JMLR 2017), correlated t-test: the mean difference has a
    Student t posterior with n - 1 degrees of freedom, location mean(d) and scale^2 =
    (1/n + rho/(1 - rho)) var(d), rho = n_test / (n_test + n_train) the correlation of fold scores.
    "Equivalent" means |difference| < `rope`. Identical scores on every fold are equivalent (1);
    a constant non-zero difference is certain.
    """
    d = np.asarray(scores_a, float) - np.asarray(scores_b, float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need paired scores from >= 2 folds; got shape {d.shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    if rope < 0:
        raise ValueError(f"rope must be >= 0; got {rope}")
    mean, var = d.mean(), d.var(ddof=1)
    if var == 0:
        inside = abs(mean) < rope or (rope == 0 and mean == 0)
        return (0.0, 1.0, 0.0) if inside else ((1.0, 0.0, 0.0) if mean < 0 else (0.0, 0.0, 1.0))
    scale = np.sqrt((1 / len(d) + test_fraction / (1 - test_fraction)) * var)
    posterior = stats.t(len(d) - 1, loc=mean, scale=scale)
    worse, below_rope_top = posterior.cdf(-rope), posterior.cdf(rope)
    return float(worse), float(below_rope_top - worse), float(1 - below_rope_top)


def versus_best(scores: dict[str, np.ndarray], test_train_ratio: float) -> tuple[str, dict[str, float], dict[str, float]]:
    """The entry with the highest mean fold score, and every other entry's corrected resampled
    t-test p-value against it, raw and Holm-adjusted. Entries scored on another number of folds
    (or on fewer than two) get no p-value."""
    best = max(scores, key=lambda k: np.nanmean(scores[k]))
    n = len(scores[best])
    others = [k for k in scores if k != best and len(scores[k]) == n >= 2]
    raw = np.array([corrected_resampled_ttest(scores[best], scores[k], test_train_ratio)[1] for k in others])
    return best, dict(zip(others, raw)), dict(zip(others, holm(raw)))


def corrected_unpaired_ttest(scores_a: np.ndarray, scores_b: np.ndarray, ratio_a: float,
                             ratio_b: float) -> tuple[float, float]:
    """Corrected t-test between two cross-validation runs on DIFFERENT splits of one data set
    (e.g. random vs grouped folds): (t, two-sided p).

    Each run's mean has the Nadeau-Bengio variance (1/J + n_test/n_train) var(scores) of its own J
    fold scores; the runs' splits are independent draws, so their variances add (Welch, with the
    Welch-Satterthwaite degrees of freedom). The folds are not paired: fold j of one split has
    nothing to do with fold j of the other.
    """
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need >= 2 fold scores per run; got {len(a)} and {len(b)}")
    va = (1 / len(a) + ratio_a) * a.var(ddof=1)
    vb = (1 / len(b) + ratio_b) * b.var(ddof=1)
    diff = a.mean() - b.mean()
    if va + vb == 0:
        return (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
    t = diff / np.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    return float(t), float(2 * stats.t.sf(abs(t), df))


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
    """Friedman chi-square over data sets x models, each model's mean rank, and the Nemenyi CD."""

    statistic: float
    p_value: float
    mean_ranks: np.ndarray
    critical_difference: float


def friedman(scores: np.ndarray, alpha: float = 0.05) -> FriedmanResult:
    """Friedman test on a (data sets, models) score matrix plus the Nemenyi critical difference.

    Rows must be independent (different data sets, Demsar 2006), not the folds of one data set."""
    scores = np.asarray(scores, float)
    n_folds, k = scores.shape
    if k < 3 or n_folds < 2:
        raise ValueError(f"the Friedman test needs >= 3 models and >= 2 data sets; got {k} models, "
                         f"{n_folds} data sets")
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


def mean_importance(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Fold tables of `features.importance.importance_table` summarised per feature by `summarize`:
    mean gain share and permutation importance, `permutation_std` the spread of the permutation
    importance across folds (sample std, ddof=1, like every other spread of the suite)."""
    stacked = pd.concat(tables, ignore_index=True)
    rows = []
    for feature, group in stacked.groupby("feature", sort=False):
        summary = summarize(group[["gain_share", "permutation_mean"]].to_dict("records"))
        rows.append({"feature": feature, "gain_share": summary["gain_share"],
                     "permutation_mean": summary["permutation_mean"],
                     "permutation_std": summary["permutation_mean_std"]})
    return pd.DataFrame(rows).sort_values("permutation_mean", ascending=False, ignore_index=True)
