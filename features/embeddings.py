"""Feature sets for the classical models: handcrafted, CNN embeddings, or both (hybrid).

Embeddings come per fold: fold k's CNN, trained on fold k's training part only, embeds every crystal
(`FoldResult.embeddings`), so no test crystal shapes its own features. Handcrafted features need no
training and are the same in every fold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from mcn.data.splits import Fold
from mcn.errors import DataError

FEATURE_SETS = ("handcrafted", "embedding", "hybrid")


def feature_matrix(feature_set: str, handcrafted: pd.DataFrame | np.ndarray | None = None,
                   embeddings: np.ndarray | None = None) -> np.ndarray:
    """The float matrix (crystals, features) of one feature set; hybrid puts handcrafted first."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose from {', '.join(FEATURE_SETS)}")
    given = {"handcrafted features": handcrafted, "embeddings": embeddings}
    needs = {"handcrafted": ["handcrafted features"], "embedding": ["embeddings"],
             "hybrid": ["handcrafted features", "embeddings"]}[feature_set]
    absent = [part for part in needs if given[part] is None]
    if absent:
        raise ValueError(f"feature set {feature_set!r} needs {' and '.join(absent)}")
    matrices = [np.asarray(given[part], dtype=np.float64) for part in needs]
    if len({len(m) for m in matrices}) > 1:
        raise ValueError(f"handcrafted features have {len(matrices[0])} rows, embeddings {len(matrices[1])}")
    return np.hstack(matrices)


def feature_names(feature_set: str, handcrafted_columns: Sequence[str] = (), embedding_dim: int = 0) -> list[str]:
    """Column names matching `feature_matrix`: handcrafted names, then emb_000, emb_001, ..."""
    embedding = [f"emb_{i:03d}" for i in range(embedding_dim)]
    return {"handcrafted": list(handcrafted_columns), "embedding": embedding,
            "hybrid": [*handcrafted_columns, *embedding]}[feature_set]


def fold_features(feature_set: str, handcrafted: pd.DataFrame | np.ndarray | None,
                  fold_embeddings: dict[int, np.ndarray] | None = None) -> Callable[[Fold], np.ndarray]:
    """`fold -> feature matrix of all crystals` for `cross_validate_classifier`.

    fold_embeddings: fold index -> that fold's CNN embeddings of every crystal (`load_fold_embeddings`,
        or `{r.fold: r.embeddings for r in fold_results}`).
    """
    def for_fold(fold: Fold) -> np.ndarray:
        embeddings = None
        if feature_set != "handcrafted":
            if not fold_embeddings or fold.index not in fold_embeddings:
                raise ValueError(f"no CNN embeddings for fold {fold.index}; the {feature_set!r} feature set "
                                 "needs that fold's trained CNN")
            embeddings = fold_embeddings[fold.index]
        return feature_matrix(feature_set, handcrafted, embeddings)

    return for_fold


def load_fold_embeddings(run_dir: str | Path, n_crystals: int | None = None, folds: Sequence[Fold] | None = None,
                         data_fingerprint: str | None = None) -> dict[int, np.ndarray]:
    """Embeddings of every fold saved by `mcn.train.cross_validate` under run_dir/fold_k/.

    With `folds`, each fold's embeddings must come from a CNN trained on exactly that fold's training
    part (same split hash: same seed, fold count and grouping), and every fold must be there: fold k's
    CNN of another split has trained on some of this split's fold-k test crystals, so its embeddings
    would leak them. With `data_fingerprint`, they must come from the same data set.
    """
    from mcn.train import FoldResult, split_hash

    run_dir = Path(run_dir)
    folders = sorted(run_dir.glob("fold_*"))
    if not folders:
        raise DataError(f"{run_dir}: no fold_* folders of mcn.train results")
    embeddings, hashes = {}, {}
    for folder in folders:
        result = FoldResult.load(folder)
        if n_crystals is not None and len(result.embeddings) != n_crystals:
            raise DataError(f"{folder}: embeddings of {len(result.embeddings)} crystals, the data set has "
                            f"{n_crystals}; were they made on another data set?")
        if data_fingerprint is not None and result.data_fingerprint != data_fingerprint:
            raise DataError(f"{folder}: embeddings of another data set (fingerprint {result.data_fingerprint}, "
                            f"this one {data_fingerprint})")
        embeddings[result.fold], hashes[result.fold] = result.embeddings, result.split_hash
    for fold in folds or ():
        if fold.index not in hashes:
            raise DataError(f"{run_dir}: no embeddings for fold {fold.index}; remake them with this run's "
                            "--seed, --folds and --group-by")
        if hashes[fold.index] != split_hash(fold):
            raise DataError(f"{run_dir}: fold {fold.index}'s embeddings were made with another split (split hash "
                            f"{hashes[fold.index]}, this run's {split_hash(fold)}); remake them with the same "
                            "--seed, --folds and --group-by")
    return embeddings
