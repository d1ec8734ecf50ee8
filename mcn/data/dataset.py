"""The in-memory crystal data set every part of the suite shares.

One row per crystal. Crops are kept at their native resolution so that morphometry measures the
real outline; CNNs ask for square patches of any size with `patches(size)`, made on demand by
padding the crop to a square (the aspect ratio is a class cue, so it is never stretched away) and
resizing with anti-aliasing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

import numpy as np
from skimage.transform import resize

DEFAULT_CLASSES = ("RES", "PES", "AA", "RA")
"""The paper's scheme (Fig. 1): rhombic and polyhedral euhedral/subhedral, amorphous and rounded
anhedral. The paper also writes SA (spherical-anhedral) for RA."""


@dataclass(eq=False)
class CrystalDataset:
    """Crystals with their labels, groups and physical scale.

    crops: native-resolution float32 images in [0, 1], background outside the mask set to 0.
    crop_masks: bool masks of the same shapes as `crops`.
    labels: int64 class index per crystal, into `class_names`.
    image_ids: source SEM image of each crystal: the cross-validation group.
    sample_ids: rock sample of each crystal ("" when unknown).
    pixel_size_nm: pixel size of the source image, NaN when unknown.
    pixel_size_source: where the pixel size came from: "zeiss", "fei", "tiff", "manifest",
        "images.csv", "cli" or "unknown".
    crystal_ids: unique, stable name of each crystal ("<image_id>/<instance_id>" or a file path
        relative to the data set root).
    bboxes: (n, 4) int (row0, col0, row1, col1) of the crop in its source image, -1 where the crystal
        came as a patch file.
    touches_border: the crystal is cut by its source image's border (truncated outline).
    name: the data set's name (its folder), used to name MLflow experiments.
    root: where it was read from ("" for data made in memory).
    """

    crops: list[np.ndarray]
    crop_masks: list[np.ndarray]
    labels: np.ndarray
    class_names: tuple[str, ...]
    image_ids: np.ndarray
    sample_ids: np.ndarray
    pixel_size_nm: np.ndarray
    pixel_size_source: np.ndarray
    crystal_ids: np.ndarray
    bboxes: np.ndarray
    touches_border: np.ndarray
    name: str = "dataset"
    root: str = ""
    _derived: dict = field(default_factory=dict, repr=False)
    """Arrays computed once from the crystals: CNN patches per size, and the fingerprint."""

    def __post_init__(self) -> None:
        n = len(self.crops)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.image_ids = np.asarray(self.image_ids, dtype=object)
        self.sample_ids = np.asarray(self.sample_ids, dtype=object)
        self.pixel_size_nm = np.asarray(self.pixel_size_nm, dtype=np.float64)
        self.pixel_size_source = np.asarray(self.pixel_size_source, dtype=object)
        self.crystal_ids = np.asarray(self.crystal_ids, dtype=object)
        self.bboxes = np.asarray(self.bboxes, dtype=np.int64).reshape(n, 4)
        self.touches_border = np.asarray(self.touches_border, dtype=bool)
        self.class_names = tuple(self.class_names)
        for f in ("crop_masks", "labels", "image_ids", "sample_ids", "pixel_size_nm",
                  "pixel_size_source", "crystal_ids", "bboxes", "touches_border"):
            if len(getattr(self, f)) != n:
                raise ValueError(f"CrystalDataset: `{f}` has {len(getattr(self, f))} rows, expected {n}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"CrystalDataset: labels must index class_names {self.class_names}")

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return dict(zip(self.class_names, counts.tolist()))

    def patches(self, size: int) -> np.ndarray:
        """Square CNN inputs, shape (n, size, size, 1), float32 in [0, 1]; cached per size."""
        if size not in self._derived:
            self._derived[size] = np.stack(
                [square_resize(c, size) for c in self.crops]
            )[..., None].astype(np.float32) if len(self) else np.zeros((0, size, size, 1), np.float32)
        return self._derived[size]

    def subset(self, index: np.ndarray) -> "CrystalDataset":
        """The crystals at `index` (ints or a boolean mask), class names kept."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, int)
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "_derived":
                continue
            if f.name in ("crops", "crop_masks"):
                kwargs[f.name] = [value[i] for i in index]
            elif isinstance(value, np.ndarray):
                kwargs[f.name] = value[index]
            else:
                kwargs[f.name] = value
        return CrystalDataset(**kwargs)

    def fingerprint(self) -> str:
        """A short hash of the crystals, labels and groups: names the exact data a result used.

        Cached like the patches: every fold of every model asks for it, and the crystals do not change.
        """
        if "fingerprint" not in self._derived:
            self._derived["fingerprint"] = self._hash()
        return self._derived["fingerprint"]

    def _hash(self) -> str:
        h = hashlib.sha256()
        h.update("|".join(self.class_names).encode())
        for crop, mask in zip(self.crops, self.crop_masks):
            h.update(np.ascontiguousarray(np.round(crop * 255).astype(np.uint8)).tobytes())
            h.update(np.packbits(mask).tobytes())
        h.update(self.labels.tobytes())
        h.update("|".join(map(str, self.image_ids)).encode())
        return h.hexdigest()[:16]


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Pad a 2-D array with zeros to a centred square, then resize it to `size` x `size`."""
    h, w = image.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.float32)
    r0, c0 = (side - h) // 2, (side - w) // 2
    square[r0:r0 + h, c0:c0 + w] = image
    if side == size:
        return square
    return resize(square, (size, size), order=1, anti_aliasing=side > size,
                  preserve_range=True).astype(np.float32)
