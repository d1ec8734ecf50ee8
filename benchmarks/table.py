"""`python -m benchmarks.table OUT_DIR [OUT_DIR ...]`: remake a benchmark's comparison table from its
result files (no retraining needed): Markdown, CSV, LaTeX and PNG beside the results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import results as results_io
from mcn.experiment.comparison import DEFAULT_RANK_METRIC, compare
from mcn.experiment.report import compact_markdown, write_tables


def main(argv: list[str] | None = None) -> None:
    """Re-make the comparison table of a benchmark output folder from its result files."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table", description=main.__doc__)
    parser.add_argument("out", type=Path, help="a benchmark output folder (holds results/*.json)")
    parser.add_argument("--rank-metric", default=DEFAULT_RANK_METRIC, help="metric that ranks the models")
    args = parser.parse_args(argv)
    found = results_io.load_results(args.out)
    if not found:
        sys.exit(f"error: {args.out}: no result files under {args.out / results_io.RESULTS_DIR}")
    try:
        comparison = compare(found, args.rank_metric)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    paths = write_tables(comparison, args.out)
    print(compact_markdown(comparison))
    print("\n".join(comparison.notes))
    print(f"tables: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
