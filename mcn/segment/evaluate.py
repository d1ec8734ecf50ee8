"""`python -m mcn.segment.evaluate --data SCENES --segmenter classical`: how good is a segmenter on a
scene data set with manual instance masks.

Prints, pooled over the images: instance precision / recall / F1 at IoU 0.5, pixel IoU, merges
(one predicted instance holding two or more manual ones) and splits (the reverse), and the size
distribution agreement rock typing depends on even where single masks differ: D10/D50/D90 of the
equivalent diameters of the segmented vs the manual instances (nm where every image has a pixel
size, else px) and the two-sample Kolmogorov-Smirnov statistic. The data bar is found and left out
(`mcn.segment.databar`) before segmenting; the manual masks are scored on the same rows. Where the
data set marks crystals it leaves unannotated (`ignore/` masks, e.g. the synthetic truth's crystals
too occluded or cut by the image edge), an instance found there is neither scored nor counted in
the sizes (`mcn.segment.metrics.drop_ignored`).

`--out report.csv` writes one row per image and a last row `ALL` with the pooled numbers.
Exit code 0 on success, 1 with one `error: ...` line on bad input.
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before anything else is imported)

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mcn import cli
from mcn.data.io import read_content_rows
from mcn.data.scenes import iter_scenes
from mcn.errors import DataError, warnings_as_notes
from mcn.files import atomic_path
from mcn.segment.classical import parse_crystal_size_nm
from mcn.segment.databar import segment_without_data_bar
from mcn.segment.factory import SEGMENTERS, make_segmenter
from mcn.segment.metrics import (drop_ignored, equivalent_diameters, pool_metrics, segmentation_metrics,
                                 size_agreement)

SHOWN = ("precision", "recall", "f1", "iou", "dice", "pixel_accuracy", "n_true", "n_pred", "n_matched",
         "n_merges", "n_splits", "n_ignored")


def evaluate(root: str | Path, segmenter: str = "classical", pixel_size_nm: float | None = None,
             n_images: int | None = None, progress: bool = True, **segmenter_kwargs) -> pd.DataFrame:
    """One row per image (metrics, data bar row, seconds) and a last row `ALL`: pooled metrics and
    the size agreement (`size_agreement`) over every instance of the data set."""
    rows, per_image, pred_d, true_d = [], [], [], []
    scenes = list(iter_scenes(root, pixel_size_nm))[:n_images]
    if not scenes:
        raise DataError(f"{root}: no scenes to evaluate")
    in_nm = all(math.isfinite(s.pixel_size_nm) for s in scenes)
    models = {}  # one per pixel size: loading weights once, scaling the classical one per image
    for scene in tqdm(scenes, desc=f"{segmenter} on {Path(root).name}", unit="image", disable=not progress):
        key = scene.pixel_size_nm if math.isfinite(scene.pixel_size_nm) else None
        if key not in models:
            models[key] = make_segmenter(segmenter, pixel_size_nm=scene.pixel_size_nm, **segmenter_kwargs)
        model = models[key]
        start = time.perf_counter()
        with warnings_as_notes(scene.image_id):
            labels, bar_row = segment_without_data_bar(model.segment, scene.image, read_content_rows(scene.path))
        seconds = time.perf_counter() - start
        truth = scene.labels if bar_row is None else scene.labels[:bar_row]
        ignore = None if scene.ignore is None else scene.ignore[: truth.shape[0]]
        metrics = segmentation_metrics(labels[: truth.shape[0]], truth, ignore=ignore)
        labels, _ = drop_ignored(labels[: truth.shape[0]], truth, ignore)  # for the sizes
        per_image.append(metrics)
        scale = scene.pixel_size_nm if in_nm else 1.0
        pred_d.append(equivalent_diameters(labels) * scale)
        true_d.append(equivalent_diameters(truth) * scale)
        rows.append({"image_id": scene.image_id, **{k: metrics[k] for k in SHOWN},
                     "data_bar_row": bar_row, "seconds": seconds})
    pooled = pool_metrics(per_image)
    sizes = size_agreement(np.concatenate(pred_d), np.concatenate(true_d))
    rows.append({"image_id": "ALL", **{k: pooled[k] for k in SHOWN},
                 "seconds": float(np.median([r["seconds"] for r in rows])),
                 "size_unit": "nm" if in_nm else "px", **sizes})
    return pd.DataFrame(rows)


def summary(report: pd.DataFrame) -> str:
    """The pooled row as a few readable lines."""
    a = report.iloc[-1]
    unit = a["size_unit"]
    return "\n".join([
        f"{len(report) - 1} images, {a['n_true']} manual / {a['n_pred']} segmented instances, "
        f"{a['n_matched']} matched at IoU 0.5",
        f"instance precision {a['precision']:.3f}  recall {a['recall']:.3f}  F1 {a['f1']:.3f}  "
        f"pixel IoU {a['iou']:.3f}",
        f"merges {a['n_merges']}  splits {a['n_splits']}"
        + (f"  ({a['n_ignored']} found on unannotated crystals, not scored)" if a["n_ignored"] else ""),
        f"equivalent diameter ({unit}) segmented vs manual: D10 {a['d10_pred']:.1f} vs {a['d10_true']:.1f}, "
        f"D50 {a['d50_pred']:.1f} vs {a['d50_true']:.1f} ({100 * a['d50_rel_error']:+.1f}%), "
        f"D90 {a['d90_pred']:.1f} vs {a['d90_true']:.1f}; KS statistic {a['ks_statistic']:.3f} "
        f"(p = {a['ks_pvalue']:.2g})",
        f"median {a['seconds']:.2f} s per image",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcn.segment.evaluate", description=__doc__.split("\n")[0])
    cli.data(parser, required=True)
    cli.segmenter(parser, sorted(SEGMENTERS), refuse_here=False)
    cli.crystal_size_nm(parser, default_text="auto")
    cli.pixel_size_nm(parser, default_text="images.csv, then the image's metadata; this flag wins over both")
    cli.sam(parser)
    cli.n_images(parser, default_text="every scene; N: the first N")
    cli.out(parser, metavar="REPORT.csv", default_text="no file; the summary is printed")
    cli.overwrite(parser)
    cli.quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line (module doc)."""
    args = build_parser().parse_args(argv)
    try:
        if args.n_images is not None and args.n_images < 1:
            raise DataError(f"--n-images must be >= 1; got {args.n_images}")
        if args.out and Path(args.out).exists() and not args.overwrite:
            raise DataError(f"--out {args.out}: exists; pass --overwrite to replace it")
        if not Path(args.data).is_dir():
            raise DataError(f"--data {args.data}: not a folder")
        if args.segmenter == "classical":
            kwargs = {"crystal_size_nm": parse_crystal_size_nm(args.crystal_size_nm)}
        elif args.segmenter == "sam":
            kwargs = {"checkpoint": args.sam_checkpoint, "model_type": args.sam_model_type}
        else:  # a registered model-file segmenter (e.g. the learned one)
            kwargs = {"model": args.segmenter_model}
        report = evaluate(args.data, args.segmenter, args.pixel_size_nm, args.n_images,
                          progress=not args.quiet, **kwargs)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    print(summary(report))
    if args.out:
        with atomic_path(Path(args.out)) as tmp:
            report.to_csv(tmp, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
