"""Scene data sets: whole SEM images with instance masks and a crystal table.

Layout (ROOT):
    images/<image_id>.{tif,tiff,png,jpg}   the SEM images
    masks/<image_id>.{tif,tiff,png}        uint16 instance labels, 0 = background
    crystals.csv                           image_id,instance_id,label[,sample_id] (+ any other columns)
    images.csv (optional)                  image_id[,sample_id][,pixel_size_nm]
    ignore/<image_id>.{tif,tiff,png} (optional)  non-zero where crystals are visible but not
                                           annotated (too occluded, cut by the image edge, left
                                           out by the annotator): segmentation scoring does not
                                           count a crystal found there as a false positive

Each labelled instance becomes one crystal: a crop around its bounding box plus a margin, with
everything outside its mask (background and neighbouring crystals) set to 0.

Pixel size per image, first that applies: the `pixel_size_nm` argument (source "cli"), images.csv
("images.csv"), the image's TIFF metadata ("zeiss", "fei", "tiff"), else NaN ("unknown"); see
`mcn.data.io.pixel_size_for`. Sample per image: images.csv, else crystals.csv, else "".

Inconsistencies that lose single crystals (mask instances without a crystals.csv row, rows without
a mask instance or without a label, masks with no crystal) are skipped with one warning that counts
them; anything that makes an image or a table unusable raises `DataError` naming the file.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from mcn.data.dataset import CrystalDataset
from mcn.data.io import IMAGE_SUFFIXES, pixel_size_for, read_image, read_labels
from mcn.data.tables import encode_labels, numeric_column, read_table, warn_skipped
from mcn.errors import DataError

MASK_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass
class Scene:
    """One SEM image with its instance mask and scale, and where crystals are left unannotated
    (`ignore`, boolean; None: every crystal in the image is annotated)."""

    image_id: str
    image: np.ndarray
    labels: np.ndarray
    pixel_size_nm: float
    pixel_size_source: str
    sample_id: str
    path: Path
    ignore: np.ndarray | None = None


def read_scene_table(root: str | Path) -> pd.DataFrame:
    """crystals.csv, checked: image_id and label as str, instance_id int > 0, sample_id ("" if absent).

    Extra columns (e.g. a generator's ground truth) are kept. An empty label stays "" (unlabelled).
    """
    path = Path(root) / "crystals.csv"
    table = read_table(path, ("image_id", "instance_id", "label"))
    ids = pd.to_numeric(table["instance_id"], errors="coerce")
    bad = ~(ids > 0) | (ids != ids.round())
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: instance_id must be a positive integer (0 is background); "
                        f"row {row + 2} has {table['instance_id'].iloc[row]!r}")
    table["instance_id"] = ids.astype(np.int64)
    table["image_id"] = table["image_id"].astype(str)
    table["label"] = table["label"].fillna("").astype(str).str.strip()
    table["sample_id"] = table["sample_id"].fillna("").astype(str) if "sample_id" in table else ""
    duplicated = table.duplicated(["image_id", "instance_id"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise DataError(f"{path}: image {first['image_id']!r} instance {first['instance_id']} is listed twice")
    return table


def iter_scenes(root: str | Path, pixel_size_nm: float | None = None) -> Iterator[Scene]:
    """The scenes of ROOT in image_id order; crystals.csv is optional here (only sample ids use it)."""
    root = Path(root)
    images = _scene_images(root)
    if not (root / "masks").is_dir():
        raise DataError(f"{root / 'masks'}: not found (a scene data set needs images/, masks/ and crystals.csv)")
    info = read_images_csv(root)
    crystals_sample = {}
    if (root / "crystals.csv").is_file():
        table = read_scene_table(root)
        named = table[table["sample_id"] != ""]
        crystals_sample = named.groupby("image_id")["sample_id"].first().to_dict()
    for image_id, image_path in images.items():
        image = read_image(image_path)
        labels = _read_mask(_mask_path(root, "masks", image_id), image, image_path)
        ignore_path = _mask_path(root, "ignore", image_id, required=False)
        ignore = None if ignore_path is None else _read_mask(ignore_path, image, image_path) > 0
        row = info.get(image_id, {})
        nm, source = pixel_size_for(image_path, row.get("pixel_size_nm", math.nan), "images.csv",
                                    pixel_size_nm)
        sample = row.get("sample_id") or crystals_sample.get(image_id, "")
        yield Scene(image_id, image, labels, nm, source, sample, image_path, ignore)


def load_scenes(root: str | Path, margin: float = 0.15, pixel_size_nm: float | None = None,
                class_names: tuple[str, ...] | list[str] | None = None) -> CrystalDataset:
    """Every labelled crystal of a scene data set, cropped with `margin` x its bbox's longer side."""
    if margin < 0:
        raise ValueError(f"`margin` must be >= 0; got {margin}")
    root = Path(root)
    table = read_scene_table(root)
    skipped: Counter[str] = Counter()
    skipped["crystals.csv rows without a label"] = int((table["label"] == "").sum())
    rows = {image_id: dict(zip(group["instance_id"], group["label"]))
            for image_id, group in table.groupby("image_id")}
    columns = empty_columns()
    seen = set()
    for scene in iter_scenes(root, pixel_size_nm):
        seen.add(scene.image_id)
        wanted = rows.get(scene.image_id, {})
        found = crop_scene(scene, wanted, margin, columns)
        if not found:
            skipped["masks with no crystal"] += 1
        skipped["mask instances without a crystals.csv row"] += len(found - wanted.keys())
        skipped["crystals.csv rows without a mask instance"] += len(wanted.keys() - found)
    skipped["crystals.csv rows for images missing from images/"] += sum(
        len(r) for image_id, r in rows.items() if image_id not in seen)
    warn_skipped(root, skipped)
    if not columns["crops"]:
        raise DataError(f"{root}: no labelled crystals found (crystals.csv rows must match mask instances)")
    labels, names = encode_labels(columns["names"], class_names, where=str(root / "crystals.csv"))
    return dataset_from_columns(columns, labels, names, name=root.resolve().name, root=str(root))


def empty_columns() -> dict[str, list]:
    """The per-crystal lists `crop_scene` appends to."""
    return {k: [] for k in ("crops", "crop_masks", "names", "image_ids", "sample_ids", "nm", "source",
                            "crystal_ids", "bboxes", "touches")}


def dataset_from_columns(columns: dict[str, list], labels: np.ndarray, class_names: tuple[str, ...],
                         name: str, root: str = "") -> CrystalDataset:
    """The crystals gathered by `crop_scene` as a CrystalDataset."""
    return CrystalDataset(
        crops=columns["crops"], crop_masks=columns["crop_masks"], labels=labels, class_names=class_names,
        image_ids=columns["image_ids"], sample_ids=columns["sample_ids"], pixel_size_nm=columns["nm"],
        pixel_size_source=columns["source"], crystal_ids=columns["crystal_ids"],
        bboxes=np.array(columns["bboxes"], dtype=np.int64).reshape(-1, 4),
        touches_border=columns["touches"], name=name, root=root)


def crop_scene(scene: Scene, wanted: dict[int, str], margin: float, columns: dict[str, list]) -> set[int]:
    """Append the labelled crystals of one scene to `columns` (see `empty_columns`); return every
    instance id in its mask. Training crops and the export's classifier crops both come from here.

    `wanted` maps instance id to label ("" = listed but unlabelled).
    """
    height, width = scene.labels.shape
    found = set()
    for instance, box in enumerate(ndimage.find_objects(scene.labels), start=1):
        if box is None:
            continue
        found.add(instance)
        if not wanted.get(instance):  # no row, or a row without a label
            continue
        r0, r1, c0, c1 = box[0].start, box[0].stop, box[1].start, box[1].stop
        pad = int(round(margin * max(r1 - r0, c1 - c0)))
        rows = slice(max(0, r0 - pad), min(height, r1 + pad))
        cols = slice(max(0, c0 - pad), min(width, c1 + pad))
        mask = scene.labels[rows, cols] == instance
        columns["crops"].append(np.where(mask, scene.image[rows, cols], 0).astype(np.float32))
        columns["crop_masks"].append(mask)
        columns["names"].append(wanted[instance])
        columns["image_ids"].append(scene.image_id)
        columns["sample_ids"].append(scene.sample_id)
        columns["nm"].append(scene.pixel_size_nm)
        columns["source"].append(scene.pixel_size_source)
        columns["crystal_ids"].append(f"{scene.image_id}/{instance}")
        columns["bboxes"].append((rows.start, cols.start, rows.stop, cols.stop))
        columns["touches"].append(r0 == 0 or c0 == 0 or r1 == height or c1 == width)
    return found


def _scene_images(root: Path) -> dict[str, Path]:
    folder = root / "images"
    if not folder.is_dir():
        raise DataError(f"{folder}: not found (a scene data set needs images/, masks/ and crystals.csv)")
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in images:
            raise DataError(f"{path}: image id {path.stem!r} also used by {images[path.stem].name}")
        images[path.stem] = path
    if not images:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def _mask_path(root: Path, folder: str, image_id: str, required: bool = True) -> Path | None:
    """ROOT/folder/<image_id> with a mask suffix; None (or DataError where `required`) when absent."""
    for suffix in MASK_SUFFIXES:
        path = root / folder / f"{image_id}{suffix}"
        if path.is_file():
            return path
    if required:
        raise DataError(f"{root / folder / image_id}.tif: mask not found for image {image_id!r}")
    return None


def _read_mask(path: Path, image: np.ndarray, image_path: Path) -> np.ndarray:
    labels = read_labels(path)
    if labels.shape != image.shape:
        raise DataError(f"{path}: mask is {labels.shape[0]}x{labels.shape[1]} but its image "
                        f"{image_path.name} is {image.shape[0]}x{image.shape[1]}")
    return labels


def read_images_csv(root: Path) -> dict[str, dict]:
    """images.csv as {image_id: {"sample_id": str, "pixel_size_nm": float}}; {} when absent."""
    path = root / "images.csv"
    if not path.is_file():
        return {}
    table = read_table(path, ("image_id",))
    info = pd.DataFrame({"image_id": table["image_id"].astype(str)})
    if "sample_id" in table:
        info["sample_id"] = table["sample_id"].fillna("").astype(str)
    if "pixel_size_nm" in table:
        info["pixel_size_nm"] = numeric_column(table, "pixel_size_nm", path)
    if info["image_id"].duplicated().any():
        raise DataError(f"{path}: image {info['image_id'][info['image_id'].duplicated()].iloc[0]!r} listed twice")
    return info.set_index("image_id").to_dict("index")
