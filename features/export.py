"""`python -m features.export`: a per-crystal table in physical units from whole SEM images.

For each image of `--images DIR` (TIFF/PNG/JPG), crystals come from the instance masks of
`--masks DIR` (same file stem, .tif/.tiff/.png) or from a segmenter (classical by default, SAM with
a checkpoint). Every crystal gets its image, sample, instance id, centroid (px and nm), the columns
of `features.morphometry.morphometry_table` (pixels and physical units), the quality flags
`touches_border` and `occluded_likely`, the pixel size and its source and, with `--classifier`, the
predicted class and one `probability_<class>` column per class. Beside the output `<stem>.csv` or
`<stem>.parquet` go:
- `<stem>_images.csv`, `<stem>_samples.csv`: summaries (`features.summary`);
- `<stem>_overlays/<image_id>.png`: instance outlines on each image, coloured by class;
- with `--rock-types K`: `<stem>_rocktypes.csv` and `<stem>_rocktypes.png` (`features.rocktype`).

Pixel size per image, first that applies: the `pixel_size_nm` column of `images.csv` (a table the
user curated per image), the image file's metadata (Zeiss `CZ_SEM`, FEI/Thermo, or the suite's TIFF
tags), then `--pixel-size-nm`; else the physical columns are NaN and `pixel_size_source` is
"unknown". This is `mcn.data.io.pixel_size_for`'s order, except that here the flag only fills images
that record no pixel size: a folder of SEM images usually mixes magnifications, and one number
stamped over every image's own calibration would be silently wrong.

Sample ids: the `sample_id` column of `images.csv`; an image it does not list (or without
images.csv) is its own sample, named by its image id (the file stem). `images.csv` (image_id,
sample_id, pixel_size_nm, as in the scene format) is looked for in `--images DIR`, then in its
parent (where the scene format keeps it, beside `images/`).

With `--preprocess` the segmenter sees the image after the paper's chain (`Preprocessor()`); the
morphometry's intensity columns and the classifier's crops use the image as read, as training did.
An image that cannot be read (or has no matching mask) is reported and skipped. Outputs are
written atomically, the crystal table last, and existing outputs are only replaced with
`--overwrite`. Exit code 0 on success, 1 with one `error: ...` line on bad input.
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before keras is first imported)

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from features.morphometry import morphometry_table
from features.overlay import save_overlay
from features.rocktype import RockTyper, check_rock_types
from features.summary import PREDICTED_CLASS, image_summary, sample_summary, statistic_columns
from mcn.data.dataset import CrystalDataset
from mcn.data.io import IMAGE_SUFFIXES, pixel_size_for, read_image, read_labels
from mcn.data.scenes import MASK_SUFFIXES, Scene, crop_scene, dataset_from_columns, empty_columns, read_images_csv
from mcn.errors import DataError
from mcn.files import atomic_path
from mcn.segment.classical import ClassicalSegmenter
from mcn.segment.preprocess import Preprocessor

CROP_MARGIN = 0.15
"""Margin of the classifier's crops around each crystal: `mcn.data.scenes.load_scenes`' default,
so crops match the ones the classifier was trained on."""

TABLE_SUFFIXES = (".csv", ".parquet")

Segment = Callable[[np.ndarray], np.ndarray]


@dataclass
class ImageInfo:
    """One input image with its sample and scale."""

    image_id: str
    path: Path
    sample_id: str
    pixel_size_nm: float
    pixel_size_source: str


@dataclass
class ExportResult:
    """Everything an export computed; `write_outputs` puts it on disk."""

    crystals: pd.DataFrame
    images: pd.DataFrame
    samples: pd.DataFrame
    skipped: list[tuple[str, str]]
    rock_typer: RockTyper | None = None


class Classifier:
    """A Keras crystal classifier as `mcn.train` saves it: `fold_<k>/model.keras` beside `result.json`.

    The class names, in output order, come from `result.json`'s `class_names`. Crops are cut as for
    training (`CROP_MARGIN`, background suppressed) and made square inputs of the model's size by
    `CrystalDataset.patches` (`square_resize`).
    """

    def __init__(self, path: Path) -> None:
        record = path.parent / "result.json"
        if not path.is_file():
            raise DataError(f"{path}: classifier model not found")
        import keras

        import mcn.models  # noqa: F401  (registers the suite's custom layers for loading)

        try:
            self.class_names = tuple(str(c) for c in json.loads(record.read_text())["class_names"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: no class names beside the model (expected {record.name} with "
                            f"class_names, as mcn.train writes it): {exc}") from exc
        try:
            self.model = keras.saving.load_model(path)
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: cannot load the classifier ({exc})") from exc
        self.input_size = int(self.model.input_shape[1])
        self.channels = int(self.model.input_shape[-1])
        outputs = int(self.model.output_shape[-1])
        if outputs != len(self.class_names):
            raise DataError(f"{record}: {len(self.class_names)} class names for a model with {outputs} outputs")

    def predict_proba(self, crystals: CrystalDataset) -> np.ndarray:
        """(n, n_classes) class probabilities of every crystal."""
        x = crystals.patches(self.input_size)
        if self.channels != 1:
            x = np.repeat(x, self.channels, axis=-1)
        return np.asarray(self.model.predict(x, batch_size=64, verbose=0), dtype=np.float64)


def output_paths(out: Path) -> dict[str, Path]:
    """Every file or folder an export to `out` may write."""
    stem = str(out.parent / out.stem)
    return {"crystals": out, "images": Path(f"{stem}_images.csv"), "samples": Path(f"{stem}_samples.csv"),
            "overlays": Path(f"{stem}_overlays"), "rock_types": Path(f"{stem}_rocktypes.csv"),
            "rock_types_png": Path(f"{stem}_rocktypes.png")}


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
    """Sample id and pixel size of one image (rules in the module doc); reads the file's metadata."""
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


def make_segmenter(name: str, checkpoint: str | None = None, model_type: str = "vit_b",
                   preprocess: bool = False) -> Segment:
    """`segment(image) -> labels` of the chosen segmenter; SAM needs an existing checkpoint file."""
    preprocessor = Preprocessor() if preprocess else None
    if name == "classical":
        return ClassicalSegmenter(preprocessor=preprocessor).segment
    if name != "sam":
        raise DataError(f"unknown segmenter {name!r}; choose classical or sam")
    if not checkpoint:
        raise DataError("--segmenter sam needs --sam-checkpoint PATH")
    if not Path(checkpoint).is_file():  # fail before importing torch and segment-anything
        raise DataError(f"{checkpoint}: SAM checkpoint not found (weights are never downloaded)")
    from mcn.segment.sam import SamSegmenter, load_sam

    segment = SamSegmenter(load_sam(checkpoint, model_type), model_type).segment  # bad weights fail here, once
    return (lambda image: segment(preprocessor(image))) if preprocessor else segment


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


def export(images_dir: Path, masks_dir: Path | None = None, segment: Segment | None = None,
           classifier: Classifier | None = None, pixel_size_nm: float | None = None,
           rock_types: int | None = None, overlay_dir: Path | None = None) -> ExportResult:
    """Export every readable image of `images_dir`; unreadable ones are reported and skipped.

    Crystals come from `masks_dir` when given, else from `segment`. Overlays are written into
    `overlay_dir` as images are processed (None: no overlays).
    """
    if masks_dir is None and segment is None:
        raise ValueError("export needs `masks_dir` or `segment`")
    paths = list_images(images_dir)
    table = images_table(images_dir)
    if rock_types is not None:
        check_rock_types(rock_types, len({sample_of(p, table) for p in paths}))
    class_names = classifier.class_names if classifier else ()
    tables, done, skipped = [], [], []
    for path in tqdm(paths, desc="export", unit="image"):
        try:
            info = describe_image(path, table, pixel_size_nm)
            image = read_image(path)
            labels = _instances(info, image, masks_dir, segment)
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
                          sample_summary(crystals, images, class_names), skipped)
    if rock_types is not None:
        result.rock_typer = RockTyper(rock_types).fit(result.samples, statistic_columns(class_names))
    return result


def _instances(info: ImageInfo, image: np.ndarray, masks_dir: Path | None, segment: Segment | None
               ) -> np.ndarray:
    """The image's instance labels: its mask file, or the segmenter's output."""
    if masks_dir is None:
        return segment(image)
    for suffix in MASK_SUFFIXES:
        path = masks_dir / f"{info.image_id}{suffix}"
        if path.is_file():
            labels = read_labels(path)
            if labels.shape != image.shape:
                raise DataError(f"{path}: mask is {labels.shape[0]}x{labels.shape[1]} but its image is "
                                f"{image.shape[0]}x{image.shape[1]}")
            return labels
    raise DataError(f"{masks_dir}: no mask named {info.image_id} ({', '.join(MASK_SUFFIXES)})")


def write_table(table: pd.DataFrame, path: Path) -> None:
    """CSV or Parquet by the suffix, atomically."""
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)


def write_outputs(result: ExportResult, paths: dict[str, Path], overlays: Path | None = None) -> None:
    """Summaries, rock types and the finished `overlays` folder first, the crystal table last: its
    presence means a complete export."""
    write_table(result.images, paths["images"])
    write_table(result.samples, paths["samples"])
    if result.rock_typer is not None:
        write_table(result.rock_typer.table(), paths["rock_types"])
        with atomic_path(paths["rock_types_png"]) as tmp:
            result.rock_typer.plot(str(tmp))
    else:
        for stale in (paths["rock_types"], paths["rock_types_png"]):
            stale.unlink(missing_ok=True)
    if overlays is not None:
        _swap_dir(overlays, paths["overlays"])
    write_table(result.crystals, paths["crystals"])


def _swap_dir(new: Path, final: Path) -> None:
    """Put the finished folder `new` in place of `final`, removing the old one only afterwards."""
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m features.export",
        description="Per-crystal morphometry in physical units from whole SEM images, with per-image and "
                    "per-sample summaries, overlays and optional rock typing (details: module docstring).")
    parser.add_argument("--images", required=True, type=Path, help="folder of SEM images")
    parser.add_argument("--out", required=True, type=Path,
                        help="per-crystal table, .csv or .parquet; summaries and overlays go beside it")
    parser.add_argument("--masks", type=Path,
                        help="folder of instance masks named like the images (then no segmentation)")
    parser.add_argument("--segmenter", choices=("classical", "sam"), default="classical",
                        help="segmenter used without --masks (default: classical)")
    parser.add_argument("--sam-checkpoint", help="SAM weights file, needed by --segmenter sam")
    parser.add_argument("--sam-model-type", default="vit_b", choices=("vit_b", "vit_l", "vit_h"),
                        help="SAM architecture of the checkpoint (default: vit_b)")
    parser.add_argument("--preprocess", action="store_true",
                        help="apply the paper's preprocessing chain before segmenting")
    parser.add_argument("--classifier", type=Path,
                        help="trained .keras classifier (a fold folder of mcn.train: model.keras + result.json)")
    parser.add_argument("--pixel-size-nm", type=float,
                        help="pixel size for images that record none (metadata and images.csv win)")
    parser.add_argument("--rock-types", type=int, metavar="K", help="cluster samples into K rock types")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except DataError as exc:
        sys.exit(f"error: {exc}")


def _run(args: argparse.Namespace) -> None:
    if args.out.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"{args.out}: the output must end in {' or '.join(TABLE_SUFFIXES)}")
    if not args.out.parent.is_dir():
        raise DataError(f"{args.out.parent}: output folder not found")
    if args.pixel_size_nm is not None and not (0 < args.pixel_size_nm < np.inf):
        raise DataError(f"--pixel-size-nm must be a positive number; got {args.pixel_size_nm}")
    if args.masks is not None and not args.masks.is_dir():
        raise DataError(f"{args.masks}: masks folder not found")
    if args.masks is not None and args.preprocess:
        raise DataError("--preprocess only prepares images for segmentation; with --masks nothing is segmented")
    paths = output_paths(args.out)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise DataError(f"{existing[0]} exists; pass --overwrite to replace the export")
    segment = None if args.masks else make_segmenter(args.segmenter, args.sam_checkpoint,
                                                     args.sam_model_type, args.preprocess)
    classifier = Classifier(args.classifier) if args.classifier else None
    overlays = paths["overlays"].with_name(f".{paths['overlays'].name}.tmp{os.getpid()}")
    overlays.mkdir()
    try:
        result = export(args.images, args.masks, segment, classifier, args.pixel_size_nm, args.rock_types,
                        overlays)
        write_outputs(result, paths, overlays)
    finally:
        shutil.rmtree(overlays, ignore_errors=True)
    n_images = len(result.images)
    print(f"exported {len(result.crystals)} crystals from {n_images} image(s) of {len(result.samples)} "
          f"sample(s) to {args.out}; {len(result.skipped)} image(s) skipped"
          + (f" ({', '.join(name for name, _ in result.skipped)})" if result.skipped else ""))


if __name__ == "__main__":
    main()
