"""Segmentation benchmark: speed per whole SEM image and accuracy against ground-truth masks.

Speed (seconds per image, median over images, after one warm-up image): each preprocessing step
(NLM denoising with the median SNR of its input and output, `mcn.segment.preprocess.snr_db`; the
SNR of the morphological steps means little, as that module says) and the classical
segmenter on synthetic scenes at `--image-size` (default 2048 px at the paper's 10 nm, the same
field and crystals as the default 1024 px / 20 nm scenes), NLM denoising again with OpenCV held to
one thread (`preprocess:nlm:1-thread`, the per-core budget), and SAM's automatic tiled
segmentation. SAM timing needs no real weights (time does not depend on them): without
`--sam-checkpoint` a ViT of `--sam-model-type` is built with random weights and its accuracy is not
reported. Accuracy (`mcn.segment.evaluate`: pixel accuracy, IoU, Dice, instance precision/recall/F1
at IoU 0.5, pooled over images, with merges, splits and the D10/D50/D90 of the equivalent diameters):
the classical segmenter, and SAM when a checkpoint is given, with default settings on three sets:
the default synthetic scenes (or `--data` alone), small touching crystals like a real TiO2 set
(`SMALL_TOUCHING`) and the real ampis-powder scenes when present; each set's per-image report goes
to OUT/quality/<set>_<segmenter>.csv. The classical segmenter is timed with the carbonate crystal size
range given (`classical:carbonate`), by default (`classical:default`: the carbonate range checked
against the image's own estimate) and with the size estimated on each image as on data without a
pixel size (`classical:estimated`); accuracy uses the scenes' pixel size (ampis-powder records
none, so its sizes are estimated).

Writes OUT/segment_speed.csv and OUT/segment_speed.md (default OUT: mlruns/segment_speed; the
project's reference results go into benchmarks/results/segment only with `--out`; refuses to
replace them without --overwrite). Small check: `python -m benchmarks.segment_speed --image-size 512
--n-images 2 --accuracy-images 2 --sam-points-per-side 4 --out /tmp/segbench`. GPU run of SAM alone: `--sam-only --skip-accuracy
--sam-precision bf16`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

import mcn
from mcn import cli
from mcn.experiment.report import to_markdown
from mcn.data.scenes import iter_scenes
from mcn.data.synthetic import default_dataset_dir, generate
from mcn.errors import DataError
from mcn.segment.classical import CARBONATE_CRYSTAL_SIZE_NM, ClassicalSegmenter
from mcn.segment.evaluate import evaluate
from mcn.segment.metrics import (drop_ignored, equivalent_diameters, pool_metrics, segmentation_metrics,
                                 size_agreement)
from mcn.segment.preprocess import PAPER_STEPS, STEPS, NLMeans, snr_db
from mcn.files import write_text

DEFAULT_FIELD_NM = 1024 * 20.0
"""Field of view of the default synthetic scenes (1024 px at 20 nm)."""
AMPIS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ampis-powder"
SMALL_TOUCHING = {"seed": 3, "n_images": 16, "image_size": 512, "crystals_per_image": 300,
                  "coverage": (0.6, 0.85), "min_visible_area_nm2": 40000}
"""The accuracy set of small touching crystals (15-40 px, in clusters, at 20 nm), like a real set of
TiO2 particles that the project is scored on and does not have: the generator command
`python -m mcn.data.synthetic --out DIR --seed 3 --n-images 16 --image-size 512 --crystals-per-image
300 --coverage 0.6 0.85 --min-visible-area-nm2 40000`."""


def _timed(fn, images: list[np.ndarray], desc: str, quiet: bool) -> tuple[float, list]:
    """Median seconds per image after one untimed warm-up call; also the outputs."""
    fn(images[0])
    seconds, outputs = [], []
    for image in tqdm(images, desc=desc, disable=quiet):
        start = time.perf_counter()
        outputs.append(fn(image))
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), outputs


def _row(task: str, data: str, size: tuple[int, int], n: int, seconds: float | None = None,
         metrics: dict | None = None, **extra) -> dict:
    row = {"task": task, "data": data, "image_px": f"{size[0]}x{size[1]}", "n_images": n,
           "seconds_per_image": seconds}
    for key in ("pixel_accuracy", "iou", "dice", "precision", "recall", "f1", "n_merges", "n_splits",
                "d50_rel_error"):
        row[key] = None if metrics is None else metrics[key]
    row.update(extra)
    return row


def _pooled(labels: list[np.ndarray], scenes: list) -> dict:
    """Pooled segmentation metrics and the size agreement of predicted vs true instances."""
    pooled = pool_metrics([segmentation_metrics(p, s.labels, ignore=s.ignore) for p, s in zip(labels, scenes)])
    labels = [drop_ignored(p, s.labels, s.ignore)[0] for p, s in zip(labels, scenes)]  # for the sizes
    pooled.update(size_agreement(np.concatenate([equivalent_diameters(p) for p in labels]),
                                 np.concatenate([equivalent_diameters(s.labels) for s in scenes])))
    return pooled


def _sam_segmenter(args: argparse.Namespace):
    """SamSegmenter from the checkpoint, or on a randomly initialised ViT when none is given."""
    from segment_anything import sam_model_registry

    from mcn.segment.sam import SamSegmenter

    model = args.sam_checkpoint or sam_model_registry[args.sam_model_type]()
    return SamSegmenter(model, model_type=args.sam_model_type, points_per_side=args.sam_points_per_side,
                        points_per_batch=args.sam_points_per_batch, device=args.device,
                        precision=args.sam_precision)


def speed_rows(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """Per-image seconds of each preprocessing step, the classical segmenter and SAM."""
    pixel_nm = DEFAULT_FIELD_NM / args.image_size
    root = generate(tmp / "speed", n_images=args.n_images, image_size=args.image_size,
                    pixel_size_nm=pixel_nm, seed=1)
    scenes = list(iter_scenes(root))
    images = [s.image for s in scenes]
    shape = images[0].shape
    rows = []
    if not args.sam_only:
        snr_in = float(np.median([snr_db(image) for image in images]))
        for name in PAPER_STEPS:
            seconds, outputs = _timed(STEPS[name](), images, f"preprocess:{name}", args.quiet)
            snr = {} if name != "nlm" else {"snr_in_db": snr_in,
                                             "snr_out_db": float(np.median([snr_db(o) for o in outputs]))}
            rows.append(_row(f"preprocess:{name}", "synthetic", shape, len(images), seconds, **snr))
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # the budget is per core; OpenCV otherwise uses every core
        try:
            seconds, outputs = _timed(NLMeans(), images, "preprocess:nlm (1 thread)", args.quiet)
        finally:
            cv2.setNumThreads(threads)
        rows.append(_row("preprocess:nlm:1-thread", "synthetic", shape, len(images), seconds,
                         snr_in_db=snr_in, snr_out_db=float(np.median([snr_db(o) for o in outputs]))))
        for name, nm, sizes in (("carbonate", pixel_nm, CARBONATE_CRYSTAL_SIZE_NM), ("default", pixel_nm, None),
                                ("estimated", float("nan"), None)):
            classical = ClassicalSegmenter.for_pixel_size(nm, sizes)
            seconds, labels = _timed(classical.segment, images, f"classical:{name}", args.quiet)
            rows.append(_row(f"classical:{name}", "synthetic", shape, len(images), seconds,
                             _pooled(labels, scenes)))
    if not args.no_sam:
        sam = _sam_segmenter(args)
        seconds, labels = _timed(sam.segment, images, "SAM", args.quiet)
        pooled = _pooled(labels, scenes)
        rows.append(_row(f"sam:{args.sam_model_type}:{args.sam_precision}", "synthetic", shape,
                         len(images), seconds, pooled if args.sam_checkpoint else None,
                         device=str(sam.device_), weights=args.sam_checkpoint or "random"))
    return rows


def accuracy_sets(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path]]:
    """(name, folder) of each scene set the accuracy is measured on: the default synthetic scenes (or
    `--data`), the small touching crystals (`SMALL_TOUCHING`, generated into `tmp`) and ampis-powder."""
    if args.data:
        sets = [(Path(args.data).name, Path(args.data))]
    else:
        sets = [("synthetic_default", default_dataset_dir()),
                ("synthetic_small", generate(tmp / "small", progress=False, **SMALL_TOUCHING))]
    if args.ampis and Path(args.ampis).is_dir():
        sets.append(("ampis_powder", Path(args.ampis)))
    return sets


def accuracy_rows(args: argparse.Namespace, tmp: Path, out: Path) -> list[dict]:
    """Pooled quality of the classical segmenter (and SAM with a checkpoint) on each accuracy set,
    as `mcn.segment.evaluate` measures it (data bar left out, sizes from each scene's pixel size or
    estimated); each set's per-image report is written to OUT/quality/<set>_<segmenter>.csv."""
    segmenters = [("classical", "classical", {})]
    if args.sam_checkpoint and not args.no_sam:
        segmenters.append((f"sam:{args.sam_model_type}", "sam", {
            "checkpoint": args.sam_checkpoint, "model_type": args.sam_model_type,
            "points_per_side": args.sam_points_per_side, "points_per_batch": args.sam_points_per_batch,
            "device": args.device, "precision": args.sam_precision}))
    rows = []
    for name, root in accuracy_sets(args, tmp):
        shape = next(iter(iter_scenes(root))).image.shape
        for task, segmenter, kwargs in segmenters:
            report = evaluate(root, segmenter, n_images=args.accuracy_images, progress=not args.quiet, **kwargs)
            _write(out / "quality", f"{name}_{segmenter}.csv", report.to_csv(index=False))
            pooled = report.iloc[-1]
            rows.append(_row(task, name, shape, len(report) - 1, pooled["seconds"], pooled))
    return rows


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """String cells: floats to 3 decimals, missing values empty."""
    return frame.astype(object).apply(
        lambda col: col.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                            else f"{v:.3f}" if isinstance(v, float) else str(v)))


def _write(out: Path, name: str, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / name, text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segment_speed",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=2048, help="speed-test image side in px")
    cli.n_images(parser, 3, default_text="3 timed, the first also run once untimed as a warm-up")
    cli.data(parser, default_text="the cached synthetic data set; its scenes score the accuracy")
    parser.add_argument("--ampis", default=str(AMPIS_DIR), help="ampis-powder scenes ('' to skip)")
    parser.add_argument("--accuracy-images", type=int, default=None, help="use only the first N scenes")
    cli.sam(parser, default_text="random weights, timing only")
    parser.add_argument("--sam-points-per-side", type=int, default=32)
    parser.add_argument("--sam-points-per-batch", type=int, default=64,
                        help="prompts decoded at once (256 was 12%% faster on an H100)")
    parser.add_argument("--sam-precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--no-sam", action="store_true", help="skip SAM")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--sam-only", action="store_true",
                        help="time SAM alone (a GPU run: the CPU timings belong to the CPU machine)")
    cli.device(parser)
    cli.out(parser, default="mlruns/segment_speed",
            default_text="mlruns/segment_speed; reference results: benchmarks/results/segment")
    cli.overwrite(parser)
    cli.quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line of the segmentation benchmark."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.sam_only and args.no_sam:
        sys.exit("error: --sam-only and --no-sam leave nothing to run")
    if (out / "segment_speed.csv").exists() and not args.overwrite:
        sys.exit(f"error: {out / 'segment_speed.csv'}: exists; pass --overwrite to replace it")
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = speed_rows(args, Path(tmp))
            if not args.skip_accuracy:
                rows += accuracy_rows(args, Path(tmp), out)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    frame = pd.DataFrame(rows)
    header = (f"# Segmentation benchmark\n\nmcn {mcn.__version__}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs; seconds are medians per image after a warm-up; 1-minute load average "
              f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after (other processes on the same cores "
              "slow every row).")
    table = to_markdown(_display(frame))
    _write(out, "segment_speed.csv", frame.to_csv(index=False))
    _write(out, "segment_speed.md", f"{header}\n\n{table}\n")
    print(table)
    print(f"wrote {out / 'segment_speed.csv'} and {out / 'segment_speed.md'}")


if __name__ == "__main__":
    main()
