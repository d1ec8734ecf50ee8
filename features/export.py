"""`python -m features.export`: a per-crystal table in physical units from whole SEM images.

For each image of `--images DIR` (TIFF/PNG/JPG), crystals come from the instance masks of
`--masks DIR` (same file stem, .tif/.tiff/.png) or from a segmenter built for each image from its
own pixel size: classical by default (`--crystal-size-nm MIN,MAX` sets its size range), `learned`
with a model of `python -m mcn.segment.train` (`--segmenter-model`), or SAM with a checkpoint. Every crystal gets its image, sample, instance id, centroid (px and nm), the columns
of `features.morphometry.morphometry_table` (pixels and physical units), the quality flags
`touches_border` and `occluded_likely`, the pixel size and its source and, with `--classifier`, the
predicted class and one `probability_<class>` column per class. Beside the output `<stem>.csv` or
`<stem>.parquet` go:
- `<stem>_images.csv`, `<stem>_samples.csv`: summaries (`features.summary`);
- `<stem>_summary.json`: the run (counts, segmenter, every skipped image with its reason);
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

Before segmenting, the instrument's data bar is cropped off each image (`mcn.segment.databar`:
the vendor metadata's micrograph height, else a flat band with text at the bottom); the rows cropped
are the `data_bar_rows` column of `<stem>_images.csv`. A segmenter's warning about an image (its
crystals do not fit the default size range) is printed as one line naming the image and listed under
`notes` in `<stem>_summary.json`. The closing lines say where the pixel sizes came from, how many
data bars were cropped and which images were skipped or noted.

With `--preprocess` the segmenter sees the image after the paper's chain (`Preprocessor()`); the
morphometry's intensity columns and the classifier's crops use the image as read, as training did.
An image that cannot be read, is above the pixel budget (`--max-pixels`), has no matching mask, is
blank or fails to segment is reported, skipped and listed with its reason in `<stem>_summary.json`. Outputs are
written atomically, the crystal table last, and existing outputs are only replaced with
`--overwrite`. Exit code 0 on success, 1 with one `error: ...` line on bad input.
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before keras is first imported)

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from features.outputs import TABLE_SUFFIXES, output_paths, write_outputs
from features.pipeline import ExportResult, SegmenterFor, export
from mcn import cli
from mcn.data.io import MAX_IMAGE_PIXELS
from mcn.errors import DataError
from mcn.files import temp_name
from mcn.segment.classical import parse_crystal_size_nm
from mcn.segment.factory import make_segmenter
from mcn.segment.preprocess import Preprocessor

SEGMENTERS = ("classical", "learned", "sam")


def segmenter_for(name: str, crystal_size_nm: tuple[float, float] | None = None, model: Path | None = None,
                  checkpoint: str | None = None, model_type: str = "vit_b",
                  preprocess: bool = False) -> SegmenterFor:
    """pixel size -> segmenter. The classical one is built per image (its sizes follow the pixel size);
    a learned model or SAM is loaded once, here, so a bad file fails before any image is read."""
    preprocessor = Preprocessor() if preprocess else None
    if name == "classical":
        return lambda nm: make_segmenter("classical", pixel_size_nm=nm, crystal_size_nm=crystal_size_nm,
                                         preprocessor=preprocessor)
    options = {"learned": {"model": model}, "sam": {"checkpoint": checkpoint, "model_type": model_type}}[name]
    segmenter = make_segmenter(name, preprocessor=preprocessor, **options)  # loaded once: a bad file fails here
    return lambda nm: segmenter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m features.export",
        description="Per-crystal morphometry in physical units from whole SEM images, with per-image and "
                    "per-sample summaries, overlays and optional rock typing (details: module docstring).")
    cli.images(parser, required=True)
    cli.out(parser, required=True, type=Path, metavar="TABLE.csv|TABLE.parquet")
    parser.add_argument("--masks", type=Path,
                        help="folder of instance masks named like the images (then no segmentation)")
    cli.segmenter(parser, SEGMENTERS)
    cli.crystal_size_nm(parser, default_text="auto")
    cli.sam(parser)
    parser.add_argument("--preprocess", action="store_true",
                        help="apply the paper's preprocessing chain before segmenting")
    parser.add_argument("--classifier", type=Path,
                        help="trained .keras classifier (a fold folder of mcn.train: model.keras + result.json)")
    cli.pixel_size_nm(parser, default_text="images.csv, then the image's metadata; this flag is used only for "
                                           "images that record none")
    parser.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS,
                        help="skip images with more pixels than this (default: %(default)s)")
    parser.add_argument("--rock-types", type=int, metavar="K", help="cluster samples into K rock types")
    cli.jobs(parser)
    cli.overwrite(parser)
    cli.quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except DataError as exc:
        sys.exit(f"error: {exc}")


def _check(args: argparse.Namespace) -> dict[str, Path]:
    """Refuse bad flags before any image is read; the paths of the export."""
    if args.out.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"{args.out}: the output must end in {' or '.join(TABLE_SUFFIXES)}")
    if not args.out.parent.is_dir():
        raise DataError(f"{args.out.parent}: output folder not found")
    if args.pixel_size_nm is not None and not (0 < args.pixel_size_nm < np.inf):
        raise DataError(f"--pixel-size-nm must be a positive number; got {args.pixel_size_nm}")
    if args.max_pixels < 1:
        raise DataError(f"--max-pixels must be a positive number of pixels; got {args.max_pixels}")
    if args.jobs < 1:
        raise DataError(f"--jobs must be >= 1; got {args.jobs}")
    if args.masks is not None and not args.masks.is_dir():
        raise DataError(f"{args.masks}: masks folder not found")
    if args.masks is not None and args.preprocess:
        raise DataError("--preprocess only prepares images for segmentation; with --masks nothing is segmented")
    paths = output_paths(args.out)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise DataError(f"{existing[0]} exists; pass --overwrite to replace the export")
    return paths


def _run(args: argparse.Namespace) -> None:
    paths = _check(args)
    crystal_size_nm = parse_crystal_size_nm(args.crystal_size_nm)
    segmenter = None if args.masks else segmenter_for(args.segmenter, crystal_size_nm, args.segmenter_model,
                                                      args.sam_checkpoint, args.sam_model_type, args.preprocess)
    classifier = None
    if args.classifier:
        from features.classifier import Classifier

        classifier = Classifier(args.classifier)
    overlays = temp_name(paths["overlays"])  # unique: two exports to one folder never share it
    overlays.mkdir(parents=True)
    try:
        with threadpool_limits(args.jobs):
            result = export(args.images, args.masks, segmenter, classifier, args.pixel_size_nm, args.rock_types,
                            overlays, max_pixels=args.max_pixels, quiet=args.quiet)
        result.settings = {"images": str(args.images), "masks": str(args.masks) if args.masks else None,
                           "segmenter": None if args.masks else args.segmenter,
                           "segmenter_model": str(args.segmenter_model) if args.segmenter_model else None,
                           "crystal_size_nm": crystal_size_nm, "pixel_size_nm": args.pixel_size_nm}
        write_outputs(result, paths, overlays)
    finally:
        shutil.rmtree(overlays, ignore_errors=True)
    print(run_summary(result, args.out, paths["summary"].name))


def run_summary(result: ExportResult, out: Path, summary_name: str) -> str:
    """The closing lines: counts, where each image's pixel size came from, data bars cropped, and
    the images skipped or noted (details in the run summary file)."""
    images = result.images
    sources = images["pixel_size_source"].value_counts()
    bars = images[images["data_bar_rows"] > 0]
    lines = [f"exported {len(result.crystals)} crystals from {len(images)} image(s) of {len(result.samples)} "
             f"sample(s) to {out}; {len(result.skipped)} image(s) skipped"
             + (f" ({', '.join(name for name, _ in result.skipped)})" if result.skipped else ""),
             "pixel size: " + ", ".join(f"{n} image(s) from {src}" for src, n in sources.items())
             + ("" if "unknown" not in sources else " (unknown: sizes in nm are NaN; give --pixel-size-nm)"),
             f"data bar cropped from {len(bars)} image(s)"
             + (f" ({int(bars['data_bar_rows'].min())}-{int(bars['data_bar_rows'].max())} rows)" if len(bars) else "")]
    if result.notes:
        lines.append(f"{len(result.notes)} note(s) on {len({n for n, _ in result.notes})} image(s)")
    if result.skipped or result.notes:
        lines[-1] += f"; reasons in {summary_name}"
    return "\n".join(lines)

if __name__ == "__main__":
    main()
