"""How fast handcrafted morphometry runs: crystals per second, outline-only, all columns, and a selection.

`python -m benchmarks.feature_speed` measures the default synthetic data set; `--data PATH` any data
set, `--limit N` its first N crystals (a quick check). Numbers are wall-clock times (best of
`--repeat`); run on a quiet machine. With `--out FILE.csv` the rows are also written there
(benchmarks/results/ holds the reference numbers, written only when asked).
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before keras is first imported)

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from features.morphometry import HANDCRAFTED_COLUMNS, morphometry_table
from mcn import cli
from mcn.data.load import load_dataset
from mcn.errors import DataError
from mcn.files import atomic_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.feature_speed", description=__doc__.split("\n")[0])
    cli.data(p)
    p.add_argument("--limit", type=int, default=None, help="measure only the first N crystals")
    cli.jobs(p)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs (default: %(default)s)")
    cli.out(p, type=Path, metavar="ROWS.csv", default_text="no file; the rows are printed")
    cli.quiet(p)
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
        if args.jobs < 1:
            raise DataError(f"--jobs must be >= 1; got {args.jobs}")
        dataset = load_dataset(args.data)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    masks, crops, pixel = dataset.crop_masks[:n], dataset.crops[:n], dataset.pixel_size_nm[:n]
    border = dataset.touches_border[:n]
    sides = sorted(max(m.shape) for m in masks)
    print(f"{dataset.name}: {n} crystals, crop side median {sides[n // 2]} px (range {sides[0]}-{sides[-1]})")
    cases = [("outline only (size, shape, corners)", 1, dict(pixel_size_nm=pixel)),
             ("classifier inputs (HANDCRAFTED_COLUMNS)", 1,
              dict(images=crops, pixel_size_nm=pixel, touches_border=border, properties=HANDCRAFTED_COLUMNS))]
    cases += [("all properties (+ facets, texture)", jobs,
               dict(images=crops, pixel_size_nm=pixel, touches_border=border, n_jobs=jobs))
              for jobs in sorted({1, args.jobs})]
    rows = []
    for name, jobs, kwargs in tqdm(cases, desc="timing", unit="case", disable=args.quiet):
        seconds = _best_seconds(args.repeat, lambda: morphometry_table(masks, **kwargs))
        rows.append({"case": name, "processes": jobs, "crystals": n, "seconds": round(seconds, 3),
                     "crystals_per_s": round(n / seconds, 1)})
        tqdm.write(f"{name}, {jobs} process(es): {n / seconds:8.0f} crystals/s  ({seconds:.2f} s)")
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
