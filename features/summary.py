"""Per-image and per-sample summaries of an exported crystal table: what rock typing compares.

A petrographer compares samples by their crystal size distribution (D10/D50/D90), shape (aspect
ratio, convexity, facet count) and, when a classifier ran, the share of each crystal class.
Crystals cut by the image border have truncated outlines and would bias every size and shape
statistic low, so statistics use only complete crystals (counted in `n_measured`) while
`n_crystals` counts them all. Sizes are in nm; they are NaN where the pixel size is unknown.
Class fractions count every crystal, complete or not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIZE_COLUMNS = ("diameter_equivalent_nm", "axis_major_length_nm")
"""Size measures whose distribution is summarised by percentiles."""

SHAPE_COLUMNS = ("aspect_ratio_axes", "convexity", "facet_count")
"""Shape measures summarised by mean and standard deviation."""

PERCENTILES = (10, 50, 90)

PREDICTED_CLASS = "predicted_class"

COUNT_COLUMNS = ("n_crystals", "n_measured")

IMAGE_COLUMNS = ("image_id", "sample_id", "pixel_size_nm", "pixel_size_source", "data_bar_rows")
"""The table of processed images both summaries take, so an image with no crystal still counts."""


def image_summary(crystals: pd.DataFrame, images: pd.DataFrame,
                  class_names: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """One row per processed image: its sample, pixel size, counts and statistics."""
    rows = [{**image, **_statistics(crystals[crystals["image_id"] == image["image_id"]], class_names)}
            for image in images[list(IMAGE_COLUMNS)].to_dict("records")]
    return pd.DataFrame(rows, columns=[*IMAGE_COLUMNS, *COUNT_COLUMNS, *statistic_columns(class_names)])


def sample_summary(crystals: pd.DataFrame, images: pd.DataFrame,
                   class_names: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """One row per sample, pooling the crystals of all its images."""
    rows = [{"sample_id": sample, "n_images": int(group["image_id"].nunique()),
             **_statistics(crystals[crystals["sample_id"] == sample], class_names)}
            for sample, group in images.groupby("sample_id", sort=True)]
    return pd.DataFrame(rows, columns=["sample_id", "n_images", *COUNT_COLUMNS,
                                       *statistic_columns(class_names)])


def statistic_columns(class_names: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Names of the summary statistics: the features rock typing clusters on."""
    names = [f"{col}_d{p}" for col in SIZE_COLUMNS for p in PERCENTILES]
    names += [f"{col}_{stat}" for col in SHAPE_COLUMNS for stat in ("mean", "std")]
    names += [f"fraction_{c}" for c in class_names]
    return names


def _statistics(crystals: pd.DataFrame, class_names: tuple[str, ...] | list[str]) -> dict:
    complete = crystals[~crystals["touches_border"].astype(bool)]
    row: dict = {"n_crystals": len(crystals), "n_measured": len(complete)}
    for col in SIZE_COLUMNS:
        values = _finite(complete[col])
        quantiles = np.percentile(values, PERCENTILES) if len(values) else [np.nan] * len(PERCENTILES)
        row.update({f"{col}_d{p}": float(q) for p, q in zip(PERCENTILES, quantiles)})
    for col in SHAPE_COLUMNS:
        values = _finite(complete[col])
        row[f"{col}_mean"] = float(values.mean()) if len(values) else np.nan
        row[f"{col}_std"] = float(values.std()) if len(values) else np.nan
    for c in class_names:
        row[f"fraction_{c}"] = float((crystals[PREDICTED_CLASS] == c).mean()) if len(crystals) else np.nan
    return row


def _finite(values: pd.Series) -> np.ndarray:
    values = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]
