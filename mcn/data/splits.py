"""Leakage-safe splits: stratified, grouped by source SEM image, the same for every model.

Crystals cut from one SEM image share its contrast, noise and sample, so a model tested on crystals
whose neighbours it trained on scores too well. Every split here keeps each `image_id` on one side,
and the validation part used for early stopping is carved, also by image, from the training part.
One seed fixes the folds, so every model of a run sees the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


@dataclass(frozen=True)
class Fold:
    """Indices into a data set. `index` counts from 0; the holdout split is fold 0."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def check_groups(labels: np.ndarray, groups: np.ndarray, class_names: tuple[str, ...] | list[str] | None,
                 n_splits: int) -> None:
    """Refuse a split that cannot put every class in every fold's test part."""
    if n_splits < 2:
        raise ValueError(f"`folds` must be >= 2; got {n_splits}.")
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"`folds` must be <= the number of source images ({n_groups}); got {n_splits}.")
    for value in np.unique(labels):
        per_class = len(np.unique(groups[labels == value]))
        name = class_names[int(value)] if class_names is not None else str(value)
        if per_class < n_splits:
            raise ValueError(
                f"`folds` must be <= the number of source images per class "
                f"({per_class} for {name!r}); got {n_splits}."
            )


def _first_split(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int,
                 index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One stratified grouped split of `index`: (rest, held) with about 1/n_splits held out."""
    n_splits = min(n_splits, len(np.unique(groups[index])))
    if n_splits < 2:
        raise ValueError("too few source images to carve a validation part; use more images or fewer folds")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(cv.split(np.zeros(len(index)), labels[index], groups[index]))
    return index[rest], index[held]


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int = 5, seed: int = 0,
                  val_fraction: float = 0.1,
                  class_names: tuple[str, ...] | list[str] | None = None) -> list[Fold]:
    """Stratified grouped K-fold; each fold's validation part is ~`val_fraction` of all images."""
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    check_groups(labels, groups, class_names, n_splits)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    train_share = 1 - 1 / n_splits
    val_splits = max(2, round(train_share / val_fraction))
    for k, (train, test) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
        train, val = _first_split(labels, groups, val_splits, seed + 1 + k, train)
        folds.append(Fold(k, np.sort(train), np.sort(val), np.sort(test)))
    return folds


def holdout_split(labels: np.ndarray, groups: np.ndarray, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 0, class_names: tuple[str, ...] | list[str] | None = None) -> Fold:
    """The paper's 80/10/10 train/validation/test split, grouped by image."""
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    if not np.isclose(sum(fractions), 1.0) or min(fractions) <= 0:
        raise ValueError(f"`fractions` must be three positive shares summing to 1; got {fractions}.")
    n_test = max(2, round(1 / fractions[2]))
    check_groups(labels, groups, class_names, 2)
    rest, test = _first_split(labels, groups, n_test, seed, np.arange(len(labels)))
    train, val = _first_split(labels, groups, max(2, round((1 - fractions[2]) / fractions[1])), seed + 1, rest)
    return Fold(0, np.sort(train), np.sort(val), np.sort(test))


def make_folds(dataset, n_splits: int = 5, seed: int = 0, holdout: bool = False,
               val_fraction: float = 0.1) -> list[Fold]:
    """The folds of a `CrystalDataset`: K grouped folds, or the single 80/10/10 holdout split."""
    if holdout:
        return [holdout_split(dataset.labels, dataset.image_ids, seed=seed, class_names=dataset.class_names)]
    return grouped_folds(dataset.labels, dataset.image_ids, n_splits, seed, val_fraction, dataset.class_names)
