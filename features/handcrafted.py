"""The handcrafted classifier inputs: scale-free shape, facet and texture measures, plus size.

Size is the first morphometric the field measures, so it is a classifier input: physical sizes
(nm, µm²) where every crystal has a pixel size; pixel sizes where none has one (the data then
presumably shares one magnification, which a warning and the table caption say); none where only
some crystals have one (a pixel count would mix magnifications, a physical size would be missing for
the rest). `size_features` overrides the choice. `touches_border` stays in the morphometry export but
out of the inputs: it records how the image was framed, not what the crystal is.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from features.morphometry import HANDCRAFTED_COLUMNS, PROPERTIES, morphometry_table

SIZE_FEATURES = ("auto", "nm", "px", "none")
"""What `--size-features` accepts."""

SHAPE_COLUMNS: tuple[str, ...] = HANDCRAFTED_COLUMNS
"""The scale-free inputs."""

SIZE_COLUMNS: dict[str, tuple[str, ...]] = {
    "nm": tuple(n for n, p in PROPERTIES.items() if p.group == "size" and n.endswith(("_nm", "_um2"))),
    "px": tuple(n for n, p in PROPERTIES.items() if p.group == "size" and n.endswith("_px")),
    "none": (),
}


def classifier_columns(size_features: str) -> list[str]:
    """The input columns for a resolved size mode (`nm`, `px` or `none`): sizes first, then shape."""
    if size_features not in SIZE_COLUMNS:
        raise ValueError(f"size features must be one of {', '.join(SIZE_COLUMNS)}; got {size_features!r}")
    return [*SIZE_COLUMNS[size_features], *SHAPE_COLUMNS]


def resolve_size_features(dataset, requested: str = "auto") -> tuple[str, str]:
    """The size mode for `dataset` and why; an impossible request is a ValueError saying why."""
    if requested not in SIZE_FEATURES:
        raise ValueError(f"--size-features must be one of {', '.join(SIZE_FEATURES)}; got {requested!r}")
    known = np.isfinite(np.asarray(dataset.pixel_size_nm, float))
    n, n_known = len(known), int(known.sum())
    if requested == "nm":
        if n_known < n:
            raise ValueError(f"--size-features nm: {n - n_known} of {n} crystals have no pixel size; give "
                             "--pixel-size-nm, or use --size-features px or none")
        return "nm", "chosen with --size-features"
    if requested in ("px", "none"):
        return requested, "chosen with --size-features"
    if n_known == n:
        return "nm", "every crystal has a pixel size"
    if n_known == 0:
        warnings.warn("no crystal has a pixel size: sizes enter the classifiers in pixels, which assumes every "
                      "image shares one magnification (give --pixel-size-nm, or --size-features none)",
                      UserWarning, stacklevel=2)
        return "px", "no crystal has a pixel size: sizes in pixels, assuming one magnification for all images"
    return "none", (f"only {n_known} of {n} crystals have a pixel size: no size features (pixel counts would mix "
                    "magnifications)")


def handcrafted_features(dataset, size_features: str = "auto", n_jobs: int = 1,
                         progress: bool = False) -> pd.DataFrame:
    """The classifier inputs of every crystal as floats, indexed by crystal id (see the module).

    NaN marks a value that could not be measured (tiny mask); the classifier pipelines impute it.
    `size_features` is `auto` (the rule above), `nm`, `px` or `none`; `.attrs["size_features"]`
    records the mode used.
    """
    mode, _ = resolve_size_features(dataset, size_features)
    columns = classifier_columns(mode)
    table = morphometry_table(dataset.crop_masks, dataset.crops, dataset.pixel_size_nm,
                              dataset.touches_border, n_jobs, columns, progress)
    features = table[columns].astype("float64")
    features.index = pd.Index(dataset.crystal_ids, name="crystal_id")
    features.attrs["size_features"] = mode
    return features
