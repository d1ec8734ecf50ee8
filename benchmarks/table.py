"""`python -m benchmarks.table DIR [DIR ...]`: remake benchmark comparison tables from result files
(no retraining needed), and rank models across data sets.

Each DIR (a benchmark output folder of one data set) gets its comparison as Markdown, CSV, LaTeX and
PNG, with the within-data-set tests for correlated folds. With several DIRs (different data sets),
the models every data set scored are also ranked across them: mean ranks, the Friedman test and the
Nemenyi critical-difference diagram (Demsar 2006), written to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import results as results_io
from mcn import cli
from mcn.experiment.comparison import compare, protocol_text, rank_datasets
from mcn.experiment.report import caption, compact_markdown, to_markdown, write_ranking, write_tables


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", type=Path, nargs="+", metavar="DIR",
                        help="benchmark output folders (each holds results/*.json); several: one per data set")
    cli.rank_metric(parser)
    cli.rope(parser)
    cli.out(parser, type=Path, default=Path("mlruns") / "benchmark" / "ranking",
            default_text="mlruns/benchmark/ranking; the ranking across several DIRs goes there")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Remake the comparison tables of benchmark output folders; rank models across data sets."""
    args = build_parser().parse_args(argv)
    comparisons = {}
    for folder in args.dirs:
        found = results_io.load_results(folder)
        if not found:
            sys.exit(f"error: {folder}: no result files under {folder / results_io.RESULTS_DIR}")
        config_path = folder / results_io.CONFIG_FILE
        config = results_io.read_json(config_path) if config_path.is_file() else {}
        try:
            comparison = compare(found, args.rank_metric, args.rope, protocol_text(config) if config else "")
        except ValueError as exc:
            sys.exit(f"error: {folder}: {exc}")
        paths = write_tables(comparison, folder)
        print(f"{folder}:")
        print(compact_markdown(comparison))
        print(caption(comparison))
        print("\n".join(comparison.notes))
        print(f"tables: {', '.join(str(p) for p in paths.values())}\n")
        name = config.get("data_name") or folder.name
        if name in comparisons:
            sys.exit(f"error: {folder}: data set {name!r} given twice; rank across different data sets only")
        comparisons[name] = comparison
    if len(comparisons) > 1:
        ranking = rank_datasets(comparisons, args.rank_metric)
        paths = write_ranking(ranking, args.out, args.rank_metric)
        print(f"ranking across {len(comparisons)} data sets:")
        print(to_markdown(ranking.scores.T.assign(mean_rank=ranking.mean_ranks).sort_values("mean_rank")
                          .round(3).reset_index(names="model")))
        print("\n".join(ranking.notes))
        print(f"files: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
