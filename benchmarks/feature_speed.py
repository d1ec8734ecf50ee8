"""How fast handcrafted morphometry runs: crystals per second for all columns, all but texture, and
the classifier inputs, in one process and in `--jobs` processes.

`python -m benchmarks.feature_speed` measures the default synthetic data set; `--data PATH` any data
set, `--limit N` its first N crystals (a quick check). Numbers are wall-clock times (best of
`--repeat`) and crystals per CPU second (this process and its workers): other processes on the same
cores slow the first, hardly the second, and the machine's load average is recorded with them.
Writes OUT/feature_speed.csv and OUT/feature_speed.md (default OUT: mlruns/feature_speed; the
project's reference results go into benchmarks/results/features only with `--out`; refuses to
replace them without --overwrite).
"""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before keras is first imported)

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.morphometry import HANDCRAFTED_COLUMNS, PROPERTIES, TEXTURE_COLUMNS, morphometry_table
from mcn import cli
from mcn.data.load import load_dataset
from mcn.errors import DataError
from mcn.experiment.report import to_markdown
from mcn.files import write_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.feature_speed", description=__doc__.split("\n")[0])
    cli.data(p)
    p.add_argument("--limit", type=int, default=None, help="measure only the first N crystals")
    cli.jobs(p)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs (default: %(default)s)")
    cli.out(p, type=Path, default=Path("mlruns/feature_speed"), metavar="DIR")
    cli.overwrite(p)
    cli.quiet(p)
    return p


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _best_seconds(repeat: int, run) -> tuple[float, float]:
    """Wall and CPU seconds of the fastest of `repeat` runs: the least disturbed by other processes.
    CPU seconds count the work itself, whatever else the cores were doing."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        run()
        best = min(best, (time.perf_counter() - wall, _cpu_seconds() - cpu))
    return best


def cases(jobs: int) -> list[tuple[str, int, tuple[str, ...] | None, bool]]:
    """(name, processes, properties (None: all), needs the grey crops) of each timed case."""
    no_texture = tuple(name for name in PROPERTIES if name not in TEXTURE_COLUMNS)
    rows = []
    for processes in sorted({1, jobs}):
        rows += [("all columns", processes, None, True),
                 ("all but texture (size, shape, outline, Feret, intensity)", processes, no_texture, True)]
    rows.append(("classifier inputs (HANDCRAFTED_COLUMNS)", jobs, HANDCRAFTED_COLUMNS, True))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    csv, md = args.out / "feature_speed.csv", args.out / "feature_speed.md"
    try:
        if args.jobs < 1:
            raise DataError(f"--jobs must be >= 1; got {args.jobs}")
        if csv.exists() and not args.overwrite:
            raise DataError(f"{csv}: exists; pass --overwrite to replace it")
        dataset = load_dataset(args.data)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    masks, crops, pixel = dataset.crop_masks[:n], dataset.crops[:n], dataset.pixel_size_nm[:n]
    border = dataset.touches_border[:n]
    sides = sorted(max(m.shape) for m in masks)
    print(f"{dataset.name}: {n} crystals, crop side median {sides[n // 2]} px (range {sides[0]}-{sides[-1]})")
    load_before = os.getloadavg()[0]
    rows = []
    for name, jobs, properties, with_images in tqdm(cases(args.jobs), desc="feature_speed", disable=args.quiet):
        kwargs = dict(images=crops if with_images else None, pixel_size_nm=pixel, touches_border=border,
                      n_jobs=jobs, properties=properties)
        seconds, cpu = _best_seconds(args.repeat, lambda: morphometry_table(masks, **kwargs))
        rows.append({"case": name, "processes": jobs, "crystals": n, "seconds": round(seconds, 3),
                     "crystals_per_s": round(n / seconds, 1), "crystals_per_cpu_s": round(n / cpu, 1)})
        tqdm.write(f"{name}, {jobs} process(es): {n / seconds:8.0f} crystals/s  ({seconds:.2f} s; "
                   f"{n / cpu:.0f} crystals per CPU second)")
    load_after = os.getloadavg()[0]
    frame = pd.DataFrame(rows)
    header = (f"# Morphometry speed\n\n{dataset.name}, {n} crystals; mcn {mcn.__version__}, "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; best of {args.repeat} "
              f"wall-clock runs; 1-minute load average {load_before:.1f} before and {load_after:.1f} after.")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(csv, frame.to_csv(index=False))
    write_text(md, f"{header}\n\n{to_markdown(frame)}\n")
    print(f"wrote {csv} and {md}")


if __name__ == "__main__":
    main()
