"""The house rules that keep the packages layered: checked on the source, so a new import breaks a test."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of `package` imports (at any depth of the file)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package, forbidden", [("studies", "benchmarks"), ("benchmarks", "studies"),
                                                ("features", "benchmarks"), ("features", "studies"),
                                                ("mcn", "benchmarks"), ("mcn", "studies")])
def test_orchestrators_and_libraries_never_import_each_other(package, forbidden):
    offenders = [module for module, names in _imported_packages(package).items() if forbidden in names]
    assert not offenders, f"{package} must not import {forbidden}: {offenders}"


def test_libraries_below_the_experiment_layer_never_import_it():
    """mcn.data, mcn.models, mcn.segment and features sit below mcn.experiment."""
    offenders = []
    for package in ("mcn/data", "mcn/models", "mcn/segment", "features"):
        for path in (ROOT / package).rglob("*.py"):
            if "mcn.experiment" in path.read_text():
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders
