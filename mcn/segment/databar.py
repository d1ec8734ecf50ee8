"""The instrument's data bar: the band of text (magnification, kV, scale bar) SEMs write under the
micrograph. It is not sample, so segmentation and the image area used in summaries must leave it out.

Where the bar starts, first that applies:
1. the vendor metadata (`mcn.data.io.read_content_rows`): FEI/Thermo record the scanned image height
   (`[Image] ResolutionY`) and Zeiss the store resolution (`dp_image_store`, "1024 * 768"); a TIFF
   taller than that carries the bar in the extra rows;
2. the image itself: a band at the bottom whose rows are flat (most pixels exactly one grey level,
   which the noise of a micrograph never gives), holding marks (text, a scale bar) of high contrast,
   while the rows above are not flat. An image whose content has flat rows elsewhere (a saturated,
   clipped background) gives no band from the image: a flat bottom there is not evidence of a bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcn.data.io import read_content_rows

FLAT_TOLERANCE = 1.5 / 255
"""Grey levels within this of the row's median count as the band colour (8-bit quantisation)."""


def _flat_rows(image: np.ndarray, min_flat: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether most of it is one grey level, and that level (the median)."""
    medians = np.median(image, axis=1)
    flat = np.mean(np.abs(image - medians[:, None]) <= FLAT_TOLERANCE, axis=1)
    return flat >= min_flat, medians


def find_data_bar(image: np.ndarray, content_rows: int | None = None, min_rows: int = 8,
                  max_fraction: float = 0.3, min_flat: float = 0.5, mark_contrast: float = 0.25
                  ) -> int | None:
    """The row where the data bar starts (= rows of micrograph above it), or None without a bar.

    content_rows: the image height the instrument recorded for the micrograph itself (metadata); when
        it is smaller than the image, the bar starts there and the image is not inspected.
    min_rows, max_fraction: a band thinner than `min_rows` or taller than `max_fraction` of the image
        is not a data bar.
    min_flat: fraction of a row at one grey level for the row to be part of the band (text and the
        scale bar cover less than half a row).
    mark_contrast: a band must hold marks (text) differing from the band colour by at least this.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"find_data_bar expects a 2-D grey image; got shape {image.shape}")
    height = image.shape[0]
    if content_rows is not None and 0 < content_rows < height:
        return int(content_rows)
    flat, medians = _flat_rows(image, min_flat)
    start = height
    while start > 0 and flat[start - 1]:
        start -= 1
    band = height - start
    if band < min_rows or band > max_fraction * height:
        return None
    above = flat[:start]
    if above.mean() > 0.05 or above[-min_rows:].any():  # flat content elsewhere, or no sharp band top
        return None
    rows = image[start:]
    marks = np.abs(rows - medians[start:, None]) >= mark_contrast
    if not marks.any(axis=1).any() or marks.mean() > 0.5:
        return None
    return int(start)


def crop_data_bar(image: np.ndarray, path: str | Path) -> tuple[np.ndarray, int]:
    """The micrograph above the data bar of the image read from `path` (its metadata first, then the
    image itself), and the number of rows cropped (0: no bar)."""
    bar_row = find_data_bar(image, read_content_rows(path))
    return (image, 0) if bar_row is None else (image[:bar_row], image.shape[0] - bar_row)


def segment_without_data_bar(segment, image: np.ndarray, content_rows: int | None = None
                             ) -> tuple[np.ndarray, int | None]:
    """(labels, bar_row): `segment(image) -> labels` run on the micrograph above the data bar, the
    bar's rows labelled 0 (matrix), and the row where the bar starts (None: no bar found), so the
    caller can report what was cropped and leave it out of the image area."""
    image = np.asarray(image)
    bar_row = find_data_bar(image, content_rows)
    if bar_row is None:
        return segment(image), None
    labels = np.zeros(image.shape, np.uint16)
    labels[:bar_row] = segment(image[:bar_row])
    return labels, bar_row
