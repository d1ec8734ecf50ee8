"""Class balancing as in the authors' code: extra copies of minority-class crystals, rotated by 90 degrees.

Applied to a training part only: validation and test crystals are never copied, so no rotated twin
of a test crystal is ever trained on. The trainer asks for the copies' indices and rotations, then
rotates the patches it feeds to the model.
"""

from __future__ import annotations

import numpy as np


def balance_by_rotation(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(index, k): every crystal once with k = 0, then rotated copies until each class has the majority's count.

    `index` points into `labels` (a training part); `k` is the number of 90-degree rotations (0..3).
    Copies of a class go round its crystals in a seeded random order, using k = 1, then 2, then 3,
    so each crystal gets distinct rotations before any repeats (repeats only where a class is more
    than four times smaller than the majority).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    index, k = [np.arange(len(labels))], [np.zeros(len(labels), np.int64)]
    if len(labels):
        classes, counts = np.unique(labels, return_counts=True)
        target = counts.max()
        for cls, count in zip(classes, counts):
            need = target - count
            if need == 0:
                continue
            members = rng.permutation(np.flatnonzero(labels == cls))
            rounds = -(-need // count)
            copies = np.concatenate([members] * rounds)[:need]
            turns = np.repeat(np.arange(rounds) % 3 + 1, count)[:need]
            index.append(copies)
            k.append(turns.astype(np.int64))
    return np.concatenate(index), np.concatenate(k)


def apply_rotations(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Rotate each image x[i] (n, h, w, c) by k[i] x 90 degrees in the (h, w) plane; h must equal w."""
    x, k = np.asarray(x), np.asarray(k)
    if len(x) != len(k):
        raise ValueError(f"`x` has {len(x)} images but `k` has {len(k)} rotations")
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(f"`x` must be square images (n, h, h, c); got shape {x.shape}")
    out = x.copy()
    for turns in (1, 2, 3):
        chosen = np.flatnonzero(k % 4 == turns)
        if len(chosen):
            out[chosen] = np.rot90(x[chosen], turns, axes=(1, 2))
    return out
