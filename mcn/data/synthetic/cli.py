"""Command line: `python -m mcn.data.synthetic --out DIR --seed 0 [--n-images N ...] [--<knob> ...]`.

Every `SceneConfig` knob is an option (`--label-noise 0.05`, ranges take two numbers:
`--rounding 0 0.4`), documented in `--help` from the dataclass's own docstring.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import fields

from mcn import cli
from mcn.data.synthetic.build import generate
from mcn.data.synthetic.config import CLASSES, SceneConfig
from mcn.errors import DataError


def _knob_help() -> dict[str, str]:
    """Each knob's description, taken from the SceneConfig docstring."""
    found = re.findall(r"^\s{6}(\w+): (.*?)(?=^\s{6}\w+:|^\s*$|\Z)", SceneConfig.__doc__, re.M | re.S)
    return {name: " ".join(text.split()) for name, text in found}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcn.data.synthetic",
        description="Render synthetic SEM micrographs of calcite microcrystals in the scene format "
                    "(images/, masks/, crystals.csv, images.csv, contact_sheet.png, synthetic.json); "
                    "--image-size 2048 --pixel-size-nm 10 reproduces the paper's geometry.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.out(parser, required=True)
    cli.seed(parser)
    cli.n_images(parser, 48)
    parser.add_argument("--image-size", type=int, default=1024, help="image side in pixels")
    cli.pixel_size_nm(parser, 20.0)
    cli.overwrite(parser)
    cli.quiet(parser)
    knobs = parser.add_argument_group("scene knobs (defaults give the benchmark's default data set)")
    descriptions = _knob_help()
    for f in fields(SceneConfig):
        default = f.default
        nargs = len(default) if isinstance(default, tuple) else None
        metavar = (CLASSES if nargs == len(CLASSES) else ("LOW", "HIGH")) if nargs else None
        knobs.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default, nargs=nargs,
                           metavar=metavar, type=type(default[0]) if nargs else type(default),
                           help=descriptions.get(f.name, ""))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = {f.name: getattr(args, f.name) for f in fields(SceneConfig)}
    start = time.perf_counter()
    try:
        out = generate(args.out, n_images=args.n_images, image_size=args.image_size,
                       pixel_size_nm=args.pixel_size_nm, seed=args.seed, overwrite=args.overwrite,
                       progress=not args.quiet, **config)
    except (ValueError, FileExistsError, DataError) as exc:
        sys.exit(f"error: {exc}")
    n_crystals = sum(1 for _ in open(out / "crystals.csv")) - 1
    print(f"wrote {args.n_images} images, {n_crystals} crystals to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
