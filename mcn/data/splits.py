"""Leakage-safe splits: stratified, grouped by rock sample or source SEM image, the same for every model.

Crystals cut from one SEM image share its contrast, noise and sample; images of one rock sample share
its class mix, crystal sizes and imaging conditions. A model tested on crystals whose siblings it
trained on scores too well for what rock typing needs: a new sample. Every split here keeps each
group (a rock sample, or a source image where the data records no samples) on one side, and the
validation part used for early stopping is carved, by the same groups, from the training part.
One seed fixes the folds, so every model of a run sees the same ones.

`resolve_grouping` holds the default rule: group by sample where the data records a sample for every
crystal and has enough samples for the folds with every class in every fold, else by image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

GROUPINGS = ("image", "sample")
"""What `--group-by` accepts: the cross-validation group of a crystal."""

AUDIT_GROUPINGS = ("crystal", *GROUPINGS)
"""`crystal` (every crystal its own group: the paper's random split) exists for the leakage audit only."""

_WHAT = {"crystal": "crystals", "image": "source images", "sample": "rock samples"}


@dataclass(frozen=True)
class Fold:
    """Indices into a data set. `index` counts from 0 over all repeats (repeat r holds indices
    r*K .. r*K+K-1); the holdout split is fold 0."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    repeat: int = 0


def check_groups(labels: np.ndarray, groups: np.ndarray, class_names: tuple[str, ...] | list[str] | None,
                 n_splits: int, what: str = "source images") -> None:
    """Refuse a split that cannot put every class in every fold's test part."""
    if n_splits < 2:
        raise ValueError(f"`folds` must be >= 2; got {n_splits}.")
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"`folds` must be <= the number of {what} ({n_groups}); got {n_splits}.")
    for value in np.unique(labels):
        per_class = len(np.unique(groups[labels == value]))
        name = class_names[int(value)] if class_names is not None else str(value)
        if per_class < n_splits:
            raise ValueError(
                f"`folds` must be <= the number of {what} per class "
                f"({per_class} for {name!r}); got {n_splits}."
            )


def groups_of(dataset, group_by: str) -> np.ndarray:
    """The cross-validation group of every crystal under `group_by` (see `AUDIT_GROUPINGS`)."""
    if group_by == "image":
        return np.asarray(dataset.image_ids).astype(str)
    if group_by == "sample":
        return np.asarray(dataset.sample_ids).astype(str)
    if group_by == "crystal":
        return np.arange(len(dataset)).astype(str)
    raise ValueError(f"unknown grouping {group_by!r}; choose from {', '.join(AUDIT_GROUPINGS)}")


def _sample_problem(dataset, n_splits: int) -> str | None:
    """Why the folds cannot be grouped by rock sample, or None when they can."""
    samples = np.asarray(dataset.sample_ids).astype(str)
    missing = int(np.sum((samples == "") | (samples == "nan")))
    if missing:
        return f"the data records no rock sample (sample_id) for {missing} of {len(samples)} crystals"
    try:
        check_groups(dataset.labels, samples, dataset.class_names, n_splits, "rock samples")
    except ValueError as exc:
        return str(exc)
    return None


def resolve_grouping(dataset, n_splits: int, requested: str | None = None) -> tuple[str, str]:
    """The grouping to use and why: `requested` if possible (else a ValueError saying why not);
    without a request, `sample` where the data allows it, else `image`."""
    if requested not in (None, "auto", *AUDIT_GROUPINGS):
        raise ValueError(f"--group-by must be one of {', '.join(GROUPINGS)}; got {requested!r}")
    n_samples = len(np.unique(np.asarray(dataset.sample_ids).astype(str)))
    if requested in (None, "auto"):
        problem = _sample_problem(dataset, n_splits)
        if problem is None:
            return "sample", (f"the data records {n_samples} rock samples, enough for {n_splits} folds with "
                              "every class in every fold")
        return "image", f"not by rock sample: {problem.rstrip('.')}"
    if requested == "sample":
        problem = _sample_problem(dataset, n_splits)
        if problem is not None:
            raise ValueError(f"--group-by sample is impossible here: {problem.rstrip('.')}; use --group-by image")
        return "sample", "chosen with --group-by"
    check_groups(dataset.labels, groups_of(dataset, requested), dataset.class_names, n_splits, _WHAT[requested])
    return requested, "chosen with --group-by"


def describe_grouping(group_by: str) -> str:
    """The grouping in words, for captions and messages."""
    return {"crystal": "not grouped (random per-crystal split)", "image": "grouped by source SEM image",
            "sample": "grouped by rock sample"}[group_by]


def _first_split(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int,
                 index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One stratified grouped split of `index`: (rest, held) with about 1/n_splits held out."""
    n_splits = min(n_splits, len(np.unique(groups[index])))
    if n_splits < 2:
        raise ValueError("too few groups (images or samples) to carve a validation part; use more data or "
                         "fewer folds")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(cv.split(np.zeros(len(index)), labels[index], groups[index]))
    return index[rest], index[held]


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int = 5, seed: int = 0,
                  val_fraction: float = 0.1,
                  class_names: tuple[str, ...] | list[str] | None = None, what: str = "source images",
                  first_index: int = 0, repeat: int = 0) -> list[Fold]:
    """Stratified grouped K-fold; each fold's validation part is ~`val_fraction` of all groups."""
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    check_groups(labels, groups, class_names, n_splits, what)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    train_share = 1 - 1 / n_splits
    val_splits = max(2, round(train_share / val_fraction))
    for k, (train, test) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
        train, val = _first_split(labels, groups, val_splits, seed + 1 + k, train)
        folds.append(Fold(first_index + k, np.sort(train), np.sort(val), np.sort(test), repeat))
    return folds


def holdout_split(labels: np.ndarray, groups: np.ndarray, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 0, class_names: tuple[str, ...] | list[str] | None = None,
                  what: str = "source images") -> Fold:
    """The paper's 80/10/10 train/validation/test split, grouped."""
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    if not np.isclose(sum(fractions), 1.0) or min(fractions) <= 0:
        raise ValueError(f"`fractions` must be three positive shares summing to 1; got {fractions}.")
    n_test = max(2, round(1 / fractions[2]))
    check_groups(labels, groups, class_names, 2, what)
    rest, test = _first_split(labels, groups, n_test, seed, np.arange(len(labels)))
    train, val = _first_split(labels, groups, max(2, round((1 - fractions[2]) / fractions[1])), seed + 1, rest)
    return Fold(0, np.sort(train), np.sort(val), np.sort(test))


REPEAT_SEED_STEP = 1000
"""Repeat r of a run with seed s splits with seed s + r * REPEAT_SEED_STEP."""


def make_folds(dataset, n_splits: int = 5, seed: int = 0, holdout: bool = False,
               val_fraction: float = 0.1, group_by: str = "auto", repeats: int = 1) -> list[Fold]:
    """The folds of a `CrystalDataset`: K grouped folds (`repeats` times, each with its own seed),
    or the single 80/10/10 holdout split. `group_by="auto"` applies `resolve_grouping`'s rule."""
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1; got {repeats}.")
    group_by = resolve_grouping(dataset, 2 if holdout else n_splits, group_by)[0]
    groups, what = groups_of(dataset, group_by), _WHAT[group_by]
    if holdout:
        return [holdout_split(dataset.labels, groups, seed=seed, class_names=dataset.class_names, what=what)]
    return [fold for r in range(repeats) for fold in grouped_folds(
        dataset.labels, groups, n_splits, seed + r * REPEAT_SEED_STEP, val_fraction, dataset.class_names, what,
        first_index=r * n_splits, repeat=r)]


def inner_folds(dataset, fold: Fold, n_splits: int, seed: int, group_by: str) -> list[Fold]:
    """K grouped folds of `fold`'s training part (its train and val parts together), indices into the
    whole data set: for searches and cross-fitting that must never see the outer test part. The
    number of folds shrinks to the groups available per class (at least 2)."""
    index = np.sort(np.concatenate([fold.train, fold.val]))
    labels, groups = np.asarray(dataset.labels)[index], groups_of(dataset, group_by)[index]
    per_class = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    k = min(n_splits, per_class)
    if k < 2:
        raise ValueError(f"fold {fold.index}: its training part has too few {_WHAT[group_by]} per class "
                         f"({per_class}) for inner folds")
    inner = grouped_folds(labels, groups, k, seed, class_names=dataset.class_names, what=_WHAT[group_by])
    return [Fold(f.index, index[f.train], index[f.val], index[f.test]) for f in inner]


def validation_fold(dataset, fold: Fold, group_by: str, seed: int, carve: bool = True) -> Fold:
    """A search split inside `fold`'s training part, scored on `fold.val` (never on `fold.test`):
    training on `fold.train`, less (with `carve`) a group carve of about `fold.val`'s size that a CNN
    spends on early stopping; classical models need no carve. A hyper-parameter search scores its
    trials on these."""
    if not carve:
        return Fold(fold.index, np.asarray(fold.train), np.array([], dtype=np.int64), np.asarray(fold.val),
                    fold.repeat)
    labels, groups = np.asarray(dataset.labels), groups_of(dataset, group_by)
    n_splits = max(2, round(len(fold.train) / max(len(fold.val), 1)))
    train, val = _first_split(labels, groups, n_splits, seed, np.asarray(fold.train))
    return Fold(fold.index, np.sort(train), np.sort(val), np.asarray(fold.val), fold.repeat)


def folds_hash(folds: list[Fold]) -> str:
    """One hash of every fold's train/val/test indices: names a split exactly (embeddings, caches)."""
    h = hashlib.sha256()
    for fold in folds:
        for part in (fold.train, fold.val, fold.test):
            h.update(np.asarray(part, np.int64).tobytes() + b"|")
        h.update(b"#")
    return h.hexdigest()[:16]
