"""Cross-fitted embedding features: training rows embedded by CNNs that never trained on them.

A fold's CNN embeds the crystals it trained on more cleanly than the test crystals it never saw, so a
classical model trained on those embeddings learns from rows that look better than the rows it is
tested on (the stacking bias). Cross-fitting splits the fold's training part into K inner grouped
folds; each inner fold's crystals are embedded by a CNN trained on the other inner folds, and these
out-of-fold embeddings become the training rows. Test rows keep the outer fold's CNN embeddings.

Measured, and why it is off by default: each CNN has its own embedding coordinates. The inner CNNs
share architecture, data and protocol with the outer one, but nothing aligns their axes, so a
classifier fitted on the inner CNNs' coordinates meets the outer CNN's on the test rows. On the
default data (quick budget, K=3) the embedding rows fell from macro-F1 0.67-0.68 to 0.28-0.32 and the
hybrid rows by 0.006-0.017 (benchmarks/results/crossfit). Cross-fitting a representation that is
comparable across CNNs (their class probabilities, as in stacking) is the way to make it pay.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from features.crossval import training_index
from features.embeddings import feature_matrix
from mcn.data.splits import Fold


def out_of_fold_embeddings(inner_results: Sequence, n_crystals: int) -> np.ndarray:
    """(n_crystals, d) embeddings: each inner fold's test crystals from that inner fold's CNN, NaN
    elsewhere. `inner_results` are `mcn.train.FoldResult`s of inner folds of one outer training part."""
    if not inner_results:
        raise ValueError("no inner fold results to cross-fit from")
    out = np.full((n_crystals, inner_results[0].embeddings.shape[1]), np.nan, np.float32)
    for result in inner_results:
        out[result.test_index] = result.embeddings[result.test_index]
    return out


def crossfit_features(feature_set: str, handcrafted: np.ndarray | None, outer: dict[int, np.ndarray],
                      out_of_fold: dict[int, np.ndarray]) -> Callable[[Fold], tuple[np.ndarray, np.ndarray]]:
    """`fold -> (X_train, X_test)` for `cross_validate_classifier`: training rows (in
    `training_index(fold)` order) with out-of-fold embeddings, test rows with the outer fold's."""
    if feature_set not in ("embedding", "hybrid"):
        raise ValueError(f"cross-fitting applies to the embedding and hybrid feature sets; got {feature_set!r}")

    def for_fold(fold: Fold) -> tuple[np.ndarray, np.ndarray]:
        if fold.index not in outer or fold.index not in out_of_fold:
            raise ValueError(f"fold {fold.index}: cross-fitting needs the outer CNN's and the inner CNNs' embeddings")
        train = training_index(fold)
        oof = out_of_fold[fold.index][train]
        missing = np.isnan(oof).any(axis=1)
        if missing.any():
            raise ValueError(f"fold {fold.index}: {int(missing.sum())} training crystals have no out-of-fold "
                             "embedding; the inner folds must cover the whole training part")
        hand = None if handcrafted is None else np.asarray(handcrafted)
        x_train = feature_matrix(feature_set, None if hand is None else hand[train], oof)
        x_test = feature_matrix(feature_set, None if hand is None else hand[fold.test], outer[fold.index][fold.test])
        return x_train, x_test

    return for_fold
