"""How fast handcrafted morphometry runs: crystals per second, outline-only and with texture.

`python -m benchmarks.feature_speed` measures the default synthetic data set; `--data PATH` any data
set, `--limit N` its first N crystals (a quick check). Run on a quiet machine: the numbers are
wall-clock times of one process.
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before keras is first imported)

import argparse
import sys
import time

from features.morphometry import morphometry_table
from mcn.data.load import load_dataset
from mcn.errors import DataError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.feature_speed", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="data set folder (default: the cached synthetic data set)")
    p.add_argument("--limit", type=int, default=None, help="measure only the first N crystals")
    p.add_argument("--jobs", type=int, default=2, help="also time this many worker processes (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs (default: %(default)s)")
    return p


def _best_seconds(repeat: int, run) -> float:
    """The fastest of `repeat` runs: the least disturbed by other processes."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        dataset = load_dataset(args.data)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    masks, crops, pixel = dataset.crop_masks[:n], dataset.crops[:n], dataset.pixel_size_nm[:n]
    sides = sorted(max(m.shape) for m in masks)
    print(f"{dataset.name}: {n} crystals, crop side median {sides[n // 2]} px (range {sides[0]}-{sides[-1]})")
    outline = _best_seconds(args.repeat, lambda: morphometry_table(masks, pixel_size_nm=pixel))
    print(f"outline only (size, shape, corners):  {n / outline:8.0f} crystals/s  ({outline:.2f} s)")
    for jobs in sorted({1, args.jobs}):
        full = _best_seconds(args.repeat, lambda: morphometry_table(masks, crops, pixel, dataset.touches_border[:n],
                                                                    n_jobs=jobs))
        print(f"all properties (+ facets, texture), {jobs} process(es): {n / full:8.0f} crystals/s  ({full:.2f} s)")


if __name__ == "__main__":
    main()
