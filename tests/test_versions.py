"""What a user quotes in a bug report, and the lock that makes a fresh install match CI's."""

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

import mcn

REPO = Path(__file__).resolve().parents[1]


def _version_lines(backend: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "mcn", "--version"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "KERAS_BACKEND": backend}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_version_names_the_suite_backend_and_installed_package_versions():
    lines = _version_lines("torch")
    assert lines[0] == f"microcrystalnet-suite {mcn.__version__}"
    assert "keras backend torch" in lines
    for name in ("keras", "numpy", "scikit-learn", "torch"):
        assert f"{name} {metadata.version(name)}" in lines


def test_version_reports_the_backend_the_user_chose():
    assert "keras backend jax" in _version_lines("jax")


def test_lock_pins_every_requirement_within_its_range():
    """A dependency added to pyproject.toml without `.ci/lock` would install unlocked in CI."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    locked = dict(line.split("==") for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines()
                  if "==" in line and not line.lstrip().startswith("#"))
    locked = {normal(name): version.strip() for name, version in locked.items()}
    for requirement in requirements:
        name = normal(requirement.name)
        if name == normal(project["name"]):
            continue  # the test extra asking for the suite's own extras
        assert name in locked, f"{requirement.name} is not in .ci/constraints.txt: run .ci/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f".ci/constraints.txt has {requirement.name}=={locked[name]}, outside {requirement}: run .ci/lock")
