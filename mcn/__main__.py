"""`python -m mcn --version`: the suite's version, its Keras backend and the key packages' versions,
the lines to quote in a bug report or beside a result."""

from __future__ import annotations

import argparse
import os
import platform
import sys

import mcn
from mcn.versions import code_version, package_versions


def version_report() -> str:
    """One line per fact: suite, code, Python, Keras backend, then each installed key package."""
    backend = os.environ["KERAS_BACKEND"]  # set by `import mcn` unless the user chose one
    lines = [f"microcrystalnet-suite {mcn.__version__}", f"code {code_version()}",
             f"python {platform.python_version()} ({platform.platform()})", f"keras backend {backend}"]
    lines += [f"{name} {version}" for name, version in package_versions(backend).items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcn",
        description="The suite's commands run as modules (python -m benchmarks.run, python -m mcn.train, "
                    "python -m studies.hpo, python -m features.export; see README.md).")
    parser.add_argument("--version", action="store_true",
                        help="print the suite's version, its Keras backend and the key packages' versions")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.version:
        parser.print_help()
        return 0
    print(version_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
