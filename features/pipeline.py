"""The export pipeline: whole SEM images to per-crystal rows, per-image and per-sample summaries.

`export` reads each image of a folder, takes its instances from a mask file or a segmenter built
for that image (so sizes in pixels follow each image's own pixel size), measures every crystal
(`features.morphometry`), optionally classifies it (`features.classifier`), and summarises
(`features.summary`) and rock-types (`features.rocktype`) the samples. Writing the results is
`features.outputs`' job; the command line is `features.export`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from features.morphometry import morphometry_table
from features.overlay import save_overlay
from features.rocktype import RockTyper, check_rock_types
from features.summary import PREDICTED_CLASS, image_summary, sample_summary, statistic_columns
from mcn.data.dataset import CrystalDataset
from mcn.data.io import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, pixel_size_for, read_image, read_labels
from mcn.data.scenes import MASK_SUFFIXES, Scene, crop_scene, dataset_from_columns, empty_columns, read_images_csv
from mcn.errors import DataError, warnings_as_notes
from mcn.segment.databar import crop_data_bar

CROP_MARGIN = 0.15
"""Margin of the classifier's crops around each crystal: `mcn.data.scenes.load_scenes`' default,
so crops match the ones the classifier was trained on."""


class Segmenter(Protocol):
    def segment(self, image: np.ndarray) -> np.ndarray: ...


SegmenterFor = Callable[[float], Segmenter]
"""Builds the segmenter for one image from its pixel size in nm (NaN when unknown)."""


class Classifier(Protocol):
    class_names: tuple[str, ...]

    def predict_proba(self, crystals: CrystalDataset) -> np.ndarray: ...


@dataclass
class ImageInfo:
    """One input image with its sample and scale."""

    image_id: str
    path: Path
    sample_id: str
    pixel_size_nm: float
    pixel_size_source: str
    data_bar_rows: int = 0
    """Rows of the instrument's data bar cropped off the bottom before segmenting (0: none found)."""


@dataclass
class ExportResult:
    """Everything an export computed; `features.outputs.write_outputs` puts it on disk."""

    crystals: pd.DataFrame
    images: pd.DataFrame
    samples: pd.DataFrame
    skipped: list[tuple[str, str]]
    notes: list[tuple[str, str]] = field(default_factory=list)
    rock_typer: RockTyper | None = None
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The run summary written beside the table: counts, settings and every skipped file with why."""
        return {"n_images": len(self.images), "n_samples": len(self.samples), "n_crystals": len(self.crystals),
                "n_skipped": len(self.skipped), **self.settings,
                "skipped": [{"file": name, "reason": reason} for name, reason in self.skipped],
                "notes": [{"file": name, "note": note} for name, note in self.notes]}


def list_images(images_dir: Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: not a folder of images")
    paths = sorted(p for p in images_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not paths:
        raise DataError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def sample_of(path: Path, table: dict[str, dict]) -> str:
    """The image's sample: images.csv's sample_id, else its own image id."""
    return table.get(path.stem, {}).get("sample_id") or path.stem


def describe_image(path: Path, table: dict[str, dict], cli_pixel_size_nm: float | None = None) -> ImageInfo:
    """Sample id and pixel size of one image (rules in `features.export`'s doc); reads the file's metadata."""
    nm, source = pixel_size_for(path, table.get(path.stem, {}).get("pixel_size_nm", np.nan), "images.csv")
    if source == "unknown" and cli_pixel_size_nm is not None:
        nm, source = float(cli_pixel_size_nm), "cli"
    return ImageInfo(path.stem, path, sample_of(path, table), nm, source)


def images_table(images_dir: Path) -> dict[str, dict]:
    """images.csv of the images folder, else of its parent, as {image_id: {column: value}}; {} if none."""
    for root in (images_dir, images_dir.parent):
        if (root / "images.csv").is_file():
            return read_images_csv(root)
    return {}


def crystal_table(info: ImageInfo, image: np.ndarray, labels: np.ndarray,
                  classifier: Classifier | None = None) -> pd.DataFrame:
    """One row per instance of `labels`: ids, centroid, scale, morphometry and flags, classes."""
    crystals = _crop_instances(info, image, labels)
    ids = np.array([int(c.rsplit("/", 1)[1]) for c in crystals.crystal_ids], dtype=np.int64)
    centroid = np.array(ndi.center_of_mass(labels > 0, labels, ids), dtype=float).reshape(-1, 2)
    table = pd.DataFrame({
        "image_id": info.image_id, "sample_id": info.sample_id, "instance_id": ids,
        "centroid_x_px": centroid[:, 1], "centroid_y_px": centroid[:, 0],
        "centroid_x_nm": centroid[:, 1] * info.pixel_size_nm,
        "centroid_y_nm": centroid[:, 0] * info.pixel_size_nm,
        "pixel_size_nm": info.pixel_size_nm, "pixel_size_source": info.pixel_size_source,
    })
    morph = morphometry_table(crystals.crop_masks, crystals.crops, info.pixel_size_nm, crystals.touches_border)
    table = pd.concat([table, morph], axis=1)
    if classifier is not None:
        proba = classifier.predict_proba(crystals) if len(crystals) else np.zeros((0, len(classifier.class_names)))
        table[PREDICTED_CLASS] = np.asarray(classifier.class_names, dtype=object)[proba.argmax(axis=1)]
        for k, name in enumerate(classifier.class_names):
            table[f"probability_{name}"] = proba[:, k]
    return table


def _crop_instances(info: ImageInfo, image: np.ndarray, labels: np.ndarray) -> CrystalDataset:
    """Every instance cropped exactly as `mcn.data.scenes.load_scenes` crops training crystals."""
    scene = Scene(info.image_id, image, labels, info.pixel_size_nm, info.pixel_size_source,
                  info.sample_id, info.path)
    columns = empty_columns()
    crop_scene(scene, dict.fromkeys(np.unique(labels[labels > 0]).tolist(), "crystal"), CROP_MARGIN, columns)
    return dataset_from_columns(columns, np.zeros(len(columns["crops"]), np.int64), ("crystal",), name=info.image_id)


def export(images_dir: Path, masks_dir: Path | None = None, segmenter_for: SegmenterFor | None = None,
           classifier: Classifier | None = None, pixel_size_nm: float | None = None,
           rock_types: int | None = None, overlay_dir: Path | None = None,
           max_pixels: int | None = MAX_IMAGE_PIXELS, quiet: bool = False) -> ExportResult:
    """Export every usable image of `images_dir`; the others are reported, skipped and listed.

    Crystals come from `masks_dir` when given, else from `segmenter_for(pixel_size_nm)` built per
    image. An image is skipped (with its reason in `ExportResult.skipped`) when it cannot be read,
    is above `max_pixels`, has no mask, is blank (one grey value: nothing to segment) or its
    segmentation fails; the export stops only when no image is left. Before segmenting, the
    instrument's data bar (`mcn.segment.databar`) is cropped off: its text is not crystals, and a
    crystal cut by it is flagged as touching the border. What a segmenter warns about an image (e.g.
    its size range did not fit) is printed as one line naming the image and kept in
    `ExportResult.notes`. Overlays are written into `overlay_dir` as images are processed (None: no
    overlays).
    """
    if masks_dir is None and segmenter_for is None:
        raise ValueError("export needs `masks_dir` or `segmenter_for`")
    paths = list_images(images_dir)
    table = images_table(images_dir)
    if rock_types is not None:
        check_rock_types(rock_types, len({sample_of(p, table) for p in paths}))
    class_names = classifier.class_names if classifier else ()
    tables, done, skipped, notes = [], [], [], []
    for path in tqdm(paths, desc="export", unit="image", disable=quiet):
        try:
            info = describe_image(path, table, pixel_size_nm)
            image = read_image(path, max_pixels=max_pixels)
            if masks_dir is None:
                image, info.data_bar_rows = crop_data_bar(image, info.path)
            with warnings_as_notes(path.name, notes):
                labels = _instances(info, image, masks_dir, segmenter_for)
        except (DataError, OSError) as exc:
            tqdm.write(f"skipped {path.name}: {exc}", file=sys.stderr)
            skipped.append((path.name, str(exc)))
            continue
        crystals = crystal_table(info, image, labels, classifier)
        tables.append(crystals)
        done.append(info)
        if overlay_dir is not None:
            classes = dict(zip(crystals["instance_id"], crystals[PREDICTED_CLASS])) if classifier else None
            save_overlay(str(overlay_dir / f"{info.image_id}.png"), image, labels, classes, class_names,
                         title=f"{info.image_id} ({info.sample_id}): {len(crystals)} crystals")
    if not done:
        raise DataError(f"{images_dir}: no image could be exported ({len(skipped)} skipped)")
    crystals = pd.concat(tables, ignore_index=True)
    images = pd.DataFrame([vars(i) for i in done]).drop(columns="path")
    result = ExportResult(crystals, image_summary(crystals, images, class_names),
                          sample_summary(crystals, images, class_names), skipped, notes)
    if rock_types is not None:
        result.rock_typer = RockTyper(rock_types).fit(result.samples[statistic_columns(class_names)],
                                                      sample_ids=result.samples["sample_id"])
    return result


def _instances(info: ImageInfo, image: np.ndarray, masks_dir: Path | None,
               segmenter_for: SegmenterFor | None) -> np.ndarray:
    """The image's instance labels: its mask file, or the output of the segmenter built for it."""
    if masks_dir is None:
        if np.ptp(image) == 0:
            raise DataError(f"{info.path.name}: blank image (a single grey value {float(image.flat[0]):.3f}): "
                            "nothing to segment")
        try:
            return segmenter_for(info.pixel_size_nm).segment(image)
        except ValueError as exc:  # a segmenter's thresholds refuse degenerate images: lose only this one
            raise DataError(f"{info.path.name}: segmentation failed ({exc})") from exc
    for suffix in MASK_SUFFIXES:
        path = masks_dir / f"{info.image_id}{suffix}"
        if path.is_file():
            labels = read_labels(path)
            if labels.shape != image.shape:
                raise DataError(f"{path}: mask is {labels.shape[0]}x{labels.shape[1]} but its image is "
                                f"{image.shape[0]}x{image.shape[1]}")
            return labels
    raise DataError(f"{masks_dir}: no mask named {info.image_id} ({', '.join(MASK_SUFFIXES)})")
