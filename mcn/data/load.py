"""One entry point for every data set format: scene folder, patch folder, pre-split patch folder."""

from __future__ import annotations

from pathlib import Path

from mcn.data.dataset import CrystalDataset
from mcn.data.patches import load_patch_folder
from mcn.data.scenes import load_scenes
from mcn.errors import DataError


def is_scene_folder(root: str | Path) -> bool:
    """ROOT has crystals.csv, or images/ and masks/ folders."""
    root = Path(root)
    return (root / "crystals.csv").is_file() or ((root / "images").is_dir() and (root / "masks").is_dir())


def load_dataset(path: str | Path | None = None, pixel_size_nm: float | None = None) -> CrystalDataset:
    """The data set at `path`, format detected; None loads the default synthetic data set.

    `pixel_size_nm`, when given, overrides every recorded pixel size (source "cli").
    """
    if path is None:
        from mcn.data.synthetic import default_dataset_dir  # generating is costly; only when asked

        path = default_dataset_dir()
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such data set folder")
    if not root.is_dir():
        raise DataError(f"{root}: a data set is a folder (scene format or class folders of patches), not a file")
    if is_scene_folder(root):
        return load_scenes(root, pixel_size_nm=pixel_size_nm)
    return load_patch_folder(root, pixel_size_nm=pixel_size_nm)
