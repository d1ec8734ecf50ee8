"""`python -m mcn.segment.train`: fit a `LearnedSegmenter` on a user's own annotated scene folder.

The images of `--data` (scene format: images/, masks/) are split by image, seeded, into training
and held-out images (`--val-fraction`, or `--train-images N`). The segmenter is fitted on the
training images, saved to `--out` (a skops file: `features.export --segmenter learned
--segmenter-model FILE` reads it), and both the classical segmenter (built per image from its
pixel size, as `features.export` does) and the learned one are scored on the held-out images:
instance precision / recall / F1 at IoU 0.5 and pixel IoU (`mcn.segment.metrics`). The scores go to
stdout and, with the split, to `<out>.json`. Fitting and scoring use each image's micrograph above
the instrument's data bar (`mcn.segment.databar`, as `features.export` and `mcn.segment.evaluate`
do): the bar's text is neither matrix to learn nor crystals to score; the rows cropped per image go
into the report. A segmenter's warning about an image is one line naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from mcn import cli
from mcn.data.scenes import Scene, iter_scenes
from mcn.errors import DataError, warnings_as_notes
from mcn.files import write_text
from mcn.segment.classical import ClassicalSegmenter
from mcn.segment.databar import crop_data_bar
from mcn.segment.learned import LearnedSegmenter
from mcn.segment.metrics import pool_metrics, segmentation_metrics

REPORTED = ("precision", "recall", "f1", "iou", "n_true", "n_pred", "n_matched")


def split_images(n: int, val_fraction: float | None, train_images: int | None, seed: int
                 ) -> tuple[list[int], list[int]]:
    """(training, held-out) image indices, seeded; at least one image on each side."""
    if n < 2:
        raise DataError(f"training and scoring need at least 2 annotated images; got {n}")
    if train_images is not None:
        if not 1 <= train_images < n:
            raise DataError(f"--train-images must be between 1 and {n - 1} (one image at least is held out); "
                            f"got {train_images}")
        held = n - train_images
    else:
        if not 0 < val_fraction < 1:
            raise DataError(f"--val-fraction must be in (0, 1); got {val_fraction}")
        held = min(max(1, int(np.ceil(val_fraction * n))), n - 1)
    train, test = train_test_split(np.arange(n), test_size=held, random_state=seed)
    return sorted(train.tolist()), sorted(test.tolist())


def without_data_bar(scene: Scene) -> tuple[Scene, int]:
    """The scene cropped to its micrograph above the data bar (metadata, else the image), and the
    number of rows cropped (0: no bar)."""
    image, rows = crop_data_bar(scene.image, scene.path)
    if not rows:
        return scene, 0
    ignore = None if scene.ignore is None else scene.ignore[: image.shape[0]]
    return replace(scene, image=image, labels=scene.labels[: image.shape[0]], ignore=ignore), rows


def score(segment, scenes: list[Scene], desc: str, quiet: bool = False) -> dict[str, float]:
    """Pooled metrics of `segment(scene) -> labels` over scenes; a warning is one line naming the image."""
    metrics = []
    for s in tqdm(scenes, desc=desc, unit="image", disable=quiet):
        with warnings_as_notes(f"{desc} on {s.image_id}"):
            metrics.append(segmentation_metrics(segment(s), s.labels, ignore=s.ignore))
    return pool_metrics(metrics)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcn.segment.train", description=__doc__.split("\n")[0])
    cli.data(p, required=True, type=Path)
    cli.out(p, required=True, type=Path, metavar="FILE.skops")
    held = p.add_mutually_exclusive_group()
    cli.val_fraction(p, 0.4, container=held)
    held.add_argument("--train-images", type=int, help="train on this many images, hold out the rest")
    p.add_argument("--sigma-max", type=float, default=16.0,
                   help="largest feature scale in pixels, about a quarter of a typical crystal's diameter "
                        "(default: %(default)s)")
    p.add_argument("--max-iter", type=int, default=200, help="boosting rounds of the pixel classifier "
                   "(default: %(default)s)")
    cli.seed(p)
    cli.jobs(p)
    cli.overwrite(p)
    cli.quiet(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    print(f"trained on {len(report['train_images'])} image(s), scored on {len(report['heldout_images'])} "
          f"held-out image(s) ({', '.join(report['heldout_images'])}):")
    for key in REPORTED:
        before, after = report["classical"][key], report["learned"][key]
        print(f"  {key:10s} classical {before:8.3f}   learned {after:8.3f}")
    print(f"wrote {args.out} and {args.out.name}.json")


def run(args: argparse.Namespace) -> dict:
    """Split, fit, save, score; the report written beside the model."""
    if args.seed < 0:
        raise DataError(f"--seed must be >= 0; got {args.seed}")
    if args.jobs < 1:
        raise DataError(f"--jobs must be >= 1; got {args.jobs}")
    if args.out.suffix.lower() != ".skops":
        raise DataError(f"{args.out}: the model file must end in .skops")
    if not args.out.parent.is_dir():
        raise DataError(f"{args.out.parent}: output folder not found")
    if args.max_iter < 1:
        raise DataError(f"--max-iter must be >= 1; got {args.max_iter}")
    record = args.out.with_name(args.out.name + ".json")
    for path in (args.out, record):
        if path.exists() and not args.overwrite:
            raise DataError(f"{path} exists; pass --overwrite to replace it")
    if args.out.exists():
        try:
            LearnedSegmenter.load(args.out)
        except DataError as exc:
            raise DataError(f"{args.out}: not replaced, it is not a model this command wrote ({exc})") from exc
    if not (args.data / "images").is_dir():
        raise DataError(f"{args.data}: not a scene data set (expected images/ and masks/)")
    read = [without_data_bar(s) for s in tqdm(iter_scenes(args.data), desc="reading scenes", unit="image",
                                              disable=args.quiet)]
    scenes, bars = [s for s, _ in read], {s.image_id: rows for s, rows in read}
    train_idx, held_idx = split_images(len(scenes), args.val_fraction, args.train_images, args.seed)
    train, held = [scenes[i] for i in train_idx], [scenes[i] for i in held_idx]
    with threadpool_limits(args.jobs):
        segmenter = LearnedSegmenter(sigma_max=args.sigma_max, max_iter=args.max_iter, seed=args.seed)
        segmenter.fit([s.image for s in train], [s.labels for s in train], [s.ignore for s in train])
        segmenter.save(args.out)
        classical = score(lambda s: ClassicalSegmenter.for_pixel_size(s.pixel_size_nm).segment(s.image),
                          held, "classical", args.quiet)
        learned = score(lambda s: segmenter.segment(s.image), held, "learned", args.quiet)
    report = {"data": str(args.data), "model": str(args.out), "seed": args.seed,
              "params": segmenter.get_params(),
              "train_images": [s.image_id for s in train], "heldout_images": [s.image_id for s in held],
              "data_bar_rows": bars,
              "classical": classical, "learned": learned}
    write_text(record, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
