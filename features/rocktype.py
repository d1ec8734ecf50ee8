"""Rock typing: group samples whose crystal populations look alike.

Samples are compared on their standardised summary statistics (size percentiles, shape means and
spreads, class fractions; see `features.summary`). A Gaussian mixture with diagonal covariances
clusters them: rock typing usually has few samples, and a full covariance per type would have more
parameters than there are samples. A statistic that is NaN for some sample (e.g. sizes in nm where a
pixel size is unknown) cannot be compared and is left out, with its name kept in `dropped_`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.base import BaseEstimator  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from mcn.errors import DataError  # noqa: E402
from mcn.files import save_figure  # noqa: E402


def check_rock_types(n_types: int, n_samples: int) -> None:
    """Refuse a clustering that cannot be done: it needs 2+ samples and 1..n_samples types."""
    if n_samples < 2:
        raise DataError(f"rock typing needs at least 2 samples; got {n_samples}")
    if not 1 <= n_types <= n_samples:
        raise DataError(f"--rock-types must be between 1 and the number of samples ({n_samples}); "
                        f"got {n_types}")


class RockTyper(BaseEstimator):
    """Cluster samples into `n_types` rock types (seeded, so the same data gives the same types).

    A scikit-learn estimator: `fit(X)` with X one row per sample and one column per summary
    statistic (`features.summary.statistic_columns`); `sample_ids` name the rows in `table()`.
    """

    def __init__(self, n_types: int = 2, seed: int = 0) -> None:
        self.n_types = n_types
        self.seed = seed

    def fit(self, X: pd.DataFrame, y=None, sample_ids=None) -> "RockTyper":
        """Fit on per-sample statistics; statistics not known for every sample are left out (`dropped_`)."""
        check_rock_types(self.n_types, len(X))
        values = pd.DataFrame(X).apply(pd.to_numeric, errors="coerce")
        features = [str(c) for c in values.columns]
        values.columns = features
        self.dropped_ = [f for f in features if not np.isfinite(values[f]).all()]
        self.features_ = [f for f in features if f not in self.dropped_]
        if not self.features_:
            raise DataError("rock typing: no summary statistic is known for every sample "
                            "(sizes need a pixel size: give --pixel-size-nm)")
        self.sample_ids_ = np.asarray(sample_ids if sample_ids is not None else values.index)
        self.scaler_ = StandardScaler().fit(values[self.features_])
        self.embedding_ = self.scaler_.transform(values[self.features_])
        distinct = len(np.unique(self.embedding_.round(9), axis=0))
        if distinct < self.n_types:
            raise DataError(f"rock typing: only {distinct} distinct sample summaries for {self.n_types} "
                            "rock types; ask for fewer types")
        self.mixture_ = GaussianMixture(self.n_types, covariance_type="diag", reg_covar=1e-3,
                                        n_init=5, random_state=self.seed).fit(self.embedding_)
        self.probabilities_ = self.mixture_.predict_proba(self.embedding_)
        self.labels_ = _ordered_labels(self.probabilities_.argmax(axis=1))
        return self

    def table(self) -> pd.DataFrame:
        """Each sample's rock type (1..n_types, numbered in order of first appearance) and its probability."""
        return pd.DataFrame({"sample_id": self.sample_ids_, "rock_type": self.labels_ + 1,
                             "probability": self.probabilities_.max(axis=1)})


def plot_rock_types(typer: RockTyper, path: str | Path) -> None:
    """Save a PCA 2-D scatter of a fitted typer's standardised samples, coloured by type and labelled."""
    n_components = min(2, *typer.embedding_.shape)
    coords = np.zeros((len(typer.embedding_), 2))
    pca = PCA(n_components)
    with np.errstate(invalid="ignore", divide="ignore"):  # identical samples have no variance
        coords[:, :n_components] = pca.fit_transform(typer.embedding_)
    share = np.zeros(2)
    share[:n_components] = np.nan_to_num(pca.explained_variance_ratio_)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    cmap = plt.get_cmap("tab10")
    for t in range(typer.n_types):
        chosen = typer.labels_ == t
        ax.scatter(coords[chosen, 0], coords[chosen, 1], s=60, color=cmap(t % 10),
                   label=f"rock type {t + 1}", edgecolor="black", linewidth=0.5)
    for (x, y), name in zip(coords, typer.sample_ids_):
        ax.annotate(str(name), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"PC 1 of the standardised sample summaries ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)")
    ax.set_title(f"{len(coords)} samples in {typer.n_types} rock types ({len(typer.features_)} statistics)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _ordered_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber mixture components by first appearance, so type numbers do not depend on the seed's order."""
    order = {c: i for i, c in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[c] for c in labels], dtype=int)
