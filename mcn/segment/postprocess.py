"""Turn candidate masks into one clean instance label image; shared by the SAM and classical segmenters.

Mask generators over-segment and overlap: SAM proposes a whole clump and each of its crystals, dust
specks and the whole field. The rules here, in order:
1. candidates outside [min_area, max_area] pixels are dropped (specks, background-sized masks);
2. overlaps are resolved greedily by priority: with `priority="area"` (default) the smaller mask
   wins shared pixels (a clump mask loses to the crystals inside it; the same rule the AMPIS
   annotators used), with `priority="score"` the higher-score mask wins;
3. a mask left with less than `min_keep` of its own pixels is dropped as a duplicate (or a union of
   masks already placed); a kept mask keeps only its largest connected piece;
4. instances are relabelled 1..N in placement order.
Border flags mark crystals cut by the image border: their outline, so their size and shape, is
truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential


@dataclass
class MaskCandidate:
    """One proposed instance: a boolean mask cropped to its bounding box, placed at (row0, col0)."""

    mask: np.ndarray
    row0: int
    col0: int
    score: float = 1.0

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @classmethod
    def from_full(cls, full_mask: np.ndarray, score: float = 1.0, row0: int = 0,
                  col0: int = 0) -> "MaskCandidate | None":
        """Crop a full-size mask to its bounding box (None when empty), offset by (row0, col0)."""
        rows = np.flatnonzero(full_mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(full_mask.any(axis=0))
        crop = full_mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(bool)
        return cls(crop, row0 + int(rows[0]), col0 + int(cols[0]), float(score))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    return lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)


def masks_to_labels(candidates: list[MaskCandidate], shape: tuple[int, int], min_area: int = 0,
                    max_area: int | None = None, priority: str = "area",
                    min_keep: float = 0.5) -> np.ndarray:
    """Resolve candidate masks into a uint16 instance label image of `shape` (rules in module doc)."""
    if priority not in ("area", "score"):
        raise ValueError(f"priority must be 'area' or 'score'; got {priority!r}")
    max_area = np.inf if max_area is None else max_area
    kept = [c for c in candidates if min_area <= c.area <= max_area]
    key = (lambda c: c.area) if priority == "area" else (lambda c: -c.score)
    labels = np.zeros(shape, np.uint16)
    n = 0
    for cand in sorted(kept, key=key):
        h, w = cand.mask.shape
        window = labels[cand.row0:cand.row0 + h, cand.col0:cand.col0 + w]
        free = cand.mask[:window.shape[0], :window.shape[1]] & (window == 0)
        if free.sum() < max(min_keep * cand.area, 1):
            continue
        free = _largest_component(free)
        if free.sum() < min_area:
            continue
        n += 1
        if n > np.iinfo(np.uint16).max:
            raise ValueError(f"more than {np.iinfo(np.uint16).max} instances do not fit uint16 labels")
        window[free] = n
    return labels


def filter_labels(labels: np.ndarray, min_area: int = 0, max_area: int | None = None) -> np.ndarray:
    """Drop instances outside [min_area, max_area] pixels and relabel the rest 1..N as uint16."""
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())
    drop = areas < min_area
    if max_area is not None:
        drop |= areas > max_area
    drop[0] = False
    out = np.where(drop[labels], 0, labels)
    return relabel_sequential(out)[0].astype(np.uint16)


def border_flags(labels: np.ndarray) -> np.ndarray:
    """Bool array indexed by label (index 0 = background, always False): True where the instance
    touches the image border, so its outline is truncated."""
    labels = np.asarray(labels)
    flags = np.zeros(int(labels.max()) + 1, bool)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    flags[np.unique(edge)] = True
    flags[0] = False
    return flags
