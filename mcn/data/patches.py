"""Patch-folder data sets (the lmcDB / authors' layout): one crystal per image file.

Layouts (ROOT):
    <class>/*.{tif,tiff,png,jpg}               one folder per class
    train/<class>/..., val/<class>/..., test/<class>/...   pre-split (val optional)
    manifest.csv (optional, either layout)     path,label,image_id[,sample_id,pixel_size_nm]

With a manifest, its rows are the data set: `path` is relative to ROOT, `label` overrides the folder,
`image_id` (the source SEM image) is the CV group. Without one, the class is the folder name and each
file is its own group, which grouped CV cannot protect from leakage between crystals of one SEM
image; a warning says so.

The crystal mask is recovered from the patch: pixels above `MASK_THRESHOLD` (the background is dark),
holes filled, largest 8-connected component; pixels outside it are set to 0 as in scene crops.

Pre-split roots keep their split: `given_split(dataset)` returns it as a `Fold` (train/val/test
indices from the top folder of each crystal's path), to run the published split next to grouped CV.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mcn.data.dataset import CrystalDataset
from mcn.data.io import is_image_file, pixel_size_for, read_image
from mcn.data.splits import Fold
from mcn.data.tables import encode_labels, numeric_column, read_table, warn_skipped
from mcn.errors import DataError

MASK_THRESHOLD = 10 / 255
"""Background of a patch is dark or zero; this tolerates JPEG ringing and faint noise."""
SPLIT_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class _Entry:
    path: Path
    crystal_id: str
    label: str
    image_id: str
    sample_id: str = ""
    pixel_size_nm: float = math.nan


def is_presplit(root: str | Path) -> bool:
    """ROOT holds train/ and test/ folders (val/ optional) of class folders."""
    return (Path(root) / "train").is_dir() and (Path(root) / "test").is_dir()


def load_patch_folder(root: str | Path, pixel_size_nm: float | None = None,
                      class_names: tuple[str, ...] | list[str] | None = None) -> CrystalDataset:
    """The crystals of a patch folder (with or without manifest.csv, flat or pre-split)."""
    root = Path(root)
    skipped: Counter[str] = Counter()
    manifest = root / "manifest.csv"
    if manifest.is_file():
        entries = _manifest_entries(root, manifest, skipped)
    else:
        entries = _folder_entries(root, skipped)
        if entries:
            warnings.warn(f"{root}: no manifest.csv, so each patch file is its own CV group and grouped CV "
                          "cannot keep crystals of one SEM image on one side; add manifest.csv with "
                          "path,label,image_id", stacklevel=2)
    crops, masks, kept = [], [], []
    for entry in entries:
        image = read_image(entry.path)
        mask = patch_mask(image)
        if not mask.any():
            skipped[f"patches with no pixel above the background threshold {MASK_THRESHOLD:.3f}"] += 1
            continue
        crops.append(np.where(mask, image, 0).astype(np.float32))
        masks.append(mask)
        kept.append(entry)
    warn_skipped(root, skipped)
    if not kept:
        raise DataError(f"{root}: no crystal patches found (expected <class>/*.tif|png|jpg, "
                        "train/ val/ test/ class folders, or manifest.csv)")
    where = manifest if manifest.is_file() else root
    labels, names = encode_labels([e.label for e in kept], class_names, where=str(where))
    sizes = [pixel_size_for(e.path, e.pixel_size_nm, "manifest", pixel_size_nm) for e in kept]
    n = len(kept)
    return CrystalDataset(
        crops=crops, crop_masks=masks, labels=labels, class_names=names,
        image_ids=[e.image_id for e in kept], sample_ids=[e.sample_id for e in kept],
        pixel_size_nm=[s[0] for s in sizes], pixel_size_source=[s[1] for s in sizes],
        crystal_ids=[e.crystal_id for e in kept], bboxes=np.full((n, 4), -1),
        touches_border=np.zeros(n, bool), name=root.resolve().name, root=str(root))


def patch_mask(image: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """The crystal in a patch: bright pixels, as one solid body (`solid_mask`)."""
    return solid_mask(image > threshold)


def solid_mask(mask: np.ndarray) -> np.ndarray:
    """A crystal as one solid body: holes filled, then the largest 8-connected component (islands
    and holes are segmentation debris). Shared by patch loading and morphometry (`solid_body`)."""
    return solid_body(mask)[0]


def solid_body(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """`solid_mask` and, where the mask is one body already, its outer contour (OpenCV's
    `findContours` points, (k, 1, 2) x/y, simple chain; None otherwise), which morphometry reuses.

    OpenCV's outer and hole contours (8-connected body, 4-connected background) tell whether there
    is anything to do: a flood fill of the outside only where there are holes, component labelling
    only where there are several outer contours."""
    padded = cv2.copyMakeBorder(np.asarray(mask, bool).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outer = [c for c, (_, _, _, parent) in zip(contours, hierarchy[0])
             if parent < 0] if contours else []  # the others are holes
    if len(outer) < len(contours):
        cv2.floodFill(padded, None, (0, 0), 2, flags=4)  # the background that reaches the border
        padded = (padded != 2).view(np.uint8)
        outer, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    solid = padded[1:-1, 1:-1].view(bool)
    if len(outer) == 1:
        return solid, outer[0] - 1
    if not outer:
        return solid, None
    _, components, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        solid.view(np.uint8), 8, cv2.CV_32S, cv2.CCL_SAUF)  # the sequential algorithm: no thread start
    return components == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA]), None


def given_split(dataset: CrystalDataset) -> Fold | None:
    """The published split of a pre-split patch folder as fold 0; None for any other data set."""
    if not dataset.root or not is_presplit(dataset.root):
        return None
    parts = np.array([str(c).split("/", 1)[0] for c in dataset.crystal_ids])
    if not set(parts) <= set(SPLIT_PARTS):
        return None
    train, val, test = (np.flatnonzero(parts == p) for p in SPLIT_PARTS)
    return Fold(0, train, val, test)


def _folder_entries(root: Path, skipped: Counter[str]) -> list[_Entry]:
    """Class folders under ROOT, or under ROOT/train, val, test."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    bases = [root]
    if is_presplit(root):
        bases = [root / p for p in SPLIT_PARTS if (root / p).is_dir()]
        others = sorted(p.name for p in _subfolders(root) if p.name not in SPLIT_PARTS)
        if others:
            skipped[f"folder(s) beside train/ val/ test/ ({', '.join(others)})"] += len(others)
    entries, empty = [], []
    for base in bases:
        for folder in _subfolders(base):
            files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            images = [p for p in files if is_image_file(p)]
            skipped["non-image files in class folders"] += len(files) - len(images)
            if not images:
                empty.append(folder.relative_to(root).as_posix())
            for path in images:
                rel = path.relative_to(root).as_posix()
                entries.append(_Entry(path, rel, folder.name, rel))
    if empty:
        skipped[f"empty class folder(s) ({', '.join(empty)})"] += len(empty)
    return entries


def _subfolders(folder: Path) -> list[Path]:
    """Visible subfolders, sorted (hidden and `_`-prefixed ones such as __MACOSX are not data)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _manifest_entries(root: Path, manifest: Path, skipped: Counter[str]) -> list[_Entry]:
    table = read_table(manifest, ("path", "label", "image_id"))
    nm = numeric_column(table, "pixel_size_nm", manifest) if "pixel_size_nm" in table else None
    entries, listed = [], set()
    for i, row in enumerate(table.itertuples(index=False)):
        where = f"{manifest}: row {i + 2}"
        if not isinstance(row.path, str) or not row.path.strip():
            raise DataError(f"{where}: empty path")
        path = root / row.path.strip()
        if not path.is_file():
            raise DataError(f"{where}: file {row.path!r} not found")
        if path.resolve() in listed:
            raise DataError(f"{where}: file {row.path!r} is listed twice")
        listed.add(path.resolve())
        if not isinstance(row.image_id, str) or not row.image_id.strip():
            raise DataError(f"{where}: empty image_id (the source SEM image, needed to group CV folds)")
        label = row.label.strip() if isinstance(row.label, str) else ""
        if not label:
            skipped["manifest rows without a label"] += 1
            continue
        sample = getattr(row, "sample_id", "")
        entries.append(_Entry(path, Path(row.path.strip()).as_posix(), label, row.image_id.strip(),
                              sample if isinstance(sample, str) else "",
                              float(nm.iloc[i]) if nm is not None else math.nan))
    on_disk = {p.resolve() for p in root.rglob("*") if is_image_file(p) and p.is_file()}
    skipped["image files not listed in manifest.csv"] += len(on_disk - listed)
    return entries
