"""Shared test data: a tiny synthetic scene set, made once per test session."""

from pathlib import Path

import pytest

import mcn  # noqa: F401  (Keras backend default before any test imports keras)

AMPIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ampis-powder"
"""Real SEM scenes (AMPIS powder, MIT) in the project's shared/ folder beside the checkout."""


@pytest.fixture(scope="session")
def ampis_dir() -> Path:
    """The real AMPIS scene data set; skipped where the checkout has no shared/ folder beside it."""
    if not (AMPIS / "crystals.csv").is_file():
        pytest.skip(f"real sample data not found at {AMPIS}")
    return AMPIS


@pytest.fixture(scope="session")
def tiny_scene_dir(tmp_path_factory) -> Path:
    """Six small synthetic SEM scenes in the scene format (all four classes, ~40 crystals each)."""
    from mcn.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("scenes") / "tiny", n_images=6, image_size=384, seed=0)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_scene_dir):
    """The crystals of `tiny_scene_dir` as a CrystalDataset."""
    from mcn.data.load import load_dataset

    return load_dataset(tiny_scene_dir)
