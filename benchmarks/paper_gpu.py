"""`python -m benchmarks.paper_gpu`: the paper's protocol for the six CNNs on several Keras backends,
one command for a GPU session.

Runs `benchmarks.cv_models` once per backend, each in a fresh process (the backend is fixed when
keras is first imported), on the same data, folds and seed, and writes one table of both:
OUT/paper_gpu.csv and .md (scores, seconds per model, training and inference crystals per second,
wall seconds per backend), beside each backend's own OUT/<backend>/cv_models.* and fold folders.
jax runs with a persistent XLA compilation cache (OUT/xla_cache by default): each model compiles its
train step once per input shape, not once per fold, and a second try reuses the first one's
compilations. A backend that is not installed is reported and skipped; the exit code says so.

For a GPU session: `python -m benchmarks.paper_gpu --backends jax,torch --out mlruns/paper_gpu`
(the paper profile: 6 CNNs x 5 folds x up to 30 epochs, batch 32, each CNN at its own input size).
Rerunning the same command resumes from the fold folders; `--overwrite` retrains.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import mcn
from mcn import cli
from mcn.files import write_text

from benchmarks.cv_models import markdown

BACKEND_MODULES = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paper_gpu", description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="jax,torch", help="comma list of Keras backends (default: %(default)s)")
    cli.profile(p, "paper")
    cli.models(p, "cnn")
    cli.epochs(p)
    cli.folds(p)
    cli.seed(p)
    cli.data(p)
    cli.out(p, default="mlruns/paper_gpu")
    cli.compile_cache(p, default_text="OUT/xla_cache")
    cli.overwrite(p)
    cli.quiet(p)
    return p


def parse_backends(spec: str) -> list[str]:
    backends = [b.strip() for b in spec.split(",") if b.strip()]
    unknown = [b for b in backends if b not in mcn.BACKENDS]
    if not backends or unknown:
        raise ValueError(f"--backends: unknown or empty {', '.join(unknown) or spec!r}; choose from "
                         f"{', '.join(mcn.BACKENDS)}")
    return list(dict.fromkeys(backends))


def cv_models_command(backend: str, args: argparse.Namespace) -> list[str]:
    """The `benchmarks.cv_models` command line for one backend."""
    command = [sys.executable, "-m", "benchmarks.cv_models", "--backend", backend, "--profile", args.profile,
               "--models", args.models, "--folds", str(args.folds), "--seed", str(args.seed), "--out", args.out,
               "--compile-cache", args.compile_cache or str(Path(args.out) / "xla_cache")]
    for flag, value in (("--epochs", args.epochs), ("--data", args.data)):
        if value is not None:
            command += [flag, str(value)]
    return command + [flag for flag, on in (("--overwrite", args.overwrite), ("--quiet", args.quiet)) if on]


def run_backend(backend: str, args: argparse.Namespace) -> tuple[pd.DataFrame | None, float, str]:
    """Run cv_models for `backend` in a fresh process: its table, wall seconds, and a problem or ''."""
    if importlib.util.find_spec(BACKEND_MODULES[backend]) is None:
        return None, 0.0, f"{backend} is not installed (pip install -e \".[{backend}]\")"
    start = time.perf_counter()
    code = subprocess.run(cv_models_command(backend, args), env={**os.environ, "KERAS_BACKEND": backend}).returncode
    seconds = time.perf_counter() - start
    table = Path(args.out) / backend / "cv_models.csv"
    if not table.is_file():
        return None, seconds, f"{backend}: cv_models wrote no table (exit code {code})"
    return pd.read_csv(table, keep_default_na=False, na_values=[""]), seconds, \
        (f"{backend}: some models failed (exit code {code})" if code else "")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        backends = parse_backends(args.backends)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    tables, walls, problems = [], {}, []
    for backend in backends:
        table, seconds, problem = run_backend(backend, args)
        if problem:
            problems.append(problem)
            print(f"warning: {problem}", file=sys.stderr)
        if table is not None:
            tables.append(table.assign(error=table["error"].fillna("")))
            walls[backend] = seconds
    if not tables:
        sys.exit(f"error: no backend produced results ({'; '.join(problems)})")
    table = pd.concat(tables, ignore_index=True)
    out = Path(args.out)
    devices = ", ".join(f"{b} on {d}" for b, d in table.groupby("backend")["device"].first().items())
    walls_text = ", ".join(f"{b} {s / 60:.1f} min" for b, s in walls.items())
    header = (f"# The paper's protocol per backend\n\nprofile {args.profile}, {args.folds} grouped folds, seed "
              f"{args.seed}; {devices} ({platform.machine()}, {os.cpu_count()} CPUs). Wall time per backend "
              f"(whole command, compilation included): {walls_text}. Train crystals / s: training crystals "
              "per epoch over the median epoch time (validation pass included); inference: one prediction "
              f"pass over every crystal after a warm-up batch.\n\nCommand: `python -m benchmarks.paper_gpu "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "paper_gpu.csv", table.assign(wall_seconds=table["backend"].map(walls)).to_csv(index=False))
    write_text(out / "paper_gpu.md", f"{header}\n\n{markdown(table)}\n")
    print(markdown(table))
    print(f"wall time: {walls_text}; wrote {out / 'paper_gpu.csv'} and {out / 'paper_gpu.md'}")
    if problems:
        sys.exit(f"error: {'; '.join(problems)}")


if __name__ == "__main__":
    main()
