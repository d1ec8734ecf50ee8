"""Which features the classical models use: XGBoost gain and permutation importance.

Gain says what the trees split on while training; permutation importance (on the test part) says
how much the macro F1 on unseen crystals drops when one feature is shuffled. The two disagree when
features are correlated or overfitted, which is why both are reported. The fold tables are
averaged one layer up, by the experiment layer's `stats.mean_importance`, with the suite's one
fold summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

from features.crossval import fit_classifier  # noqa: E402
from mcn.files import atomic_path  # noqa: E402

COLUMNS = ("feature", "gain_share", "permutation_mean", "permutation_std")


def importance_table(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                     feature_names: Sequence[str], seed: int = 0, n_repeats: int = 5) -> pd.DataFrame:
    """XGBoost gain share and permutation importance (drop of macro F1 on the test part) per feature."""
    if len(feature_names) != np.shape(X_train)[1]:
        raise ValueError(f"{len(feature_names)} feature names for {np.shape(X_train)[1]} columns")
    pipeline, classes = fit_classifier("xgboost", X_train, y_train, seed)

    def macro_f1(estimator, X, y) -> float:
        return f1_score(y, classes[estimator.predict(X)], average="macro", zero_division=0)

    gain = pipeline.named_steps["model"].get_booster().get_score(importance_type="gain")
    gain = np.array([gain.get(f"f{i}", 0.0) for i in range(len(feature_names))])
    permuted = permutation_importance(pipeline, np.asarray(X_test, dtype=np.float64), np.asarray(y_test),
                                      scoring=macro_f1, n_repeats=n_repeats, random_state=seed)
    table = pd.DataFrame({"feature": list(feature_names), "gain_share": gain / max(gain.sum(), 1e-12),
                          "permutation_mean": permuted.importances_mean,
                          "permutation_std": permuted.importances_std})
    return table.sort_values("permutation_mean", ascending=False, ignore_index=True)


def plot_importance(table: pd.DataFrame, path: str | Path, top: int = 20, title: str = "") -> Path:
    """Side-by-side horizontal bars of the `top` features by permutation importance; PNG, atomic."""
    path = Path(path)
    shown = table.head(top).iloc[::-1]
    fig, (ax_perm, ax_gain) = plt.subplots(1, 2, figsize=(11, 0.32 * len(shown) + 1.6), sharey=True)
    ax_perm.barh(shown["feature"], shown["permutation_mean"], xerr=shown["permutation_std"], color="tab:blue")
    ax_perm.set_xlabel("permutation importance (drop of macro F1)")
    ax_gain.barh(shown["feature"], shown["gain_share"], color="tab:orange")
    ax_gain.set_xlabel("XGBoost gain (share of total)")
    for ax in (ax_perm, ax_gain):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title or f"Feature importance (top {len(shown)})")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path
