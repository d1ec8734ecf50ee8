"""Intensity and texture inside a crystal: brightness, edges, GLCM and LBP summaries.

Texture is measured on a fixed-size square patch (the crop padded to a square and resampled), so
its cost does not grow with the crystal and a crystal reads the same at any magnification.
Intensities are stretched between the crystal's own 2nd and 98th percentiles first: SEM contrast
and brightness vary from image to image, the surface pattern of a crystal does not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.filters import sobel

TEXTURE_SIZE = 48
"""Side of the square patch texture is measured on, pixels."""

GLCM_LEVELS = 16
EDGE_THRESHOLD = 0.12
"""Sobel magnitude of the smoothed, contrast-stretched patch above which a pixel is an edge."""

MIN_CONTRAST = 0.05
"""Floor of the stretch range, so sensor noise on a featureless crystal is not stretched into edges."""

LBP_POINTS = 8
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")


def texture_patch(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The crystal at TEXTURE_SIZE, contrast-stretched to [0, 1], and its interior mask.

    The background is filled with the crystal's median so the outline itself does not count as an
    internal edge; the interior drops a one-pixel rim for the same reason. None when no pixel of the
    mask survives the sampling (a crystal a pixel or two thin in a long crop): it has no texture to
    measure at this size.
    """
    shrink = max(image.shape) / TEXTURE_SIZE
    inside = square_sample(mask, TEXTURE_SIZE)
    if not inside.any():
        return None
    patch = square_sample(ndi.gaussian_filter(image, (shrink - 1) / 2) if shrink > 1 else image, TEXTURE_SIZE)
    interior = ndi.binary_erosion(inside)
    if not interior.any():
        interior = inside
    lo, hi = np.percentile(patch[interior], (2, 98))
    stretched = np.clip((patch - lo) / max(hi - lo, MIN_CONTRAST), 0.0, 1.0)
    stretched[~inside] = np.median(stretched[interior])
    return stretched, interior


def square_sample(array: np.ndarray, size: int) -> np.ndarray:
    """`array` centred on a zero-padded square (as `mcn.data.dataset.square_resize` places a crop),
    sampled at `size` x `size` nearest pixels. Cheap; smooth first (anti-aliasing) to shrink."""
    h, w = array.shape
    side = max(h, w)
    centres = np.floor((np.arange(size) + 0.5) * side / size).astype(int)
    rows, cols = centres - (side - h) // 2, centres - (side - w) // 2
    out = np.zeros((size, size), array.dtype)
    ok_r, ok_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    out[np.ix_(ok_r, ok_c)] = array[np.ix_(rows[ok_r], cols[ok_c])]
    return out


def edge_map(patch: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Interior pixels on an intensity edge (facet boundaries, ridges, pits)."""
    return (sobel(ndi.gaussian_filter(patch, 1.0)) > EDGE_THRESHOLD) & interior


def intensity_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean and spread of the crystal's native grey values."""
    values = image[mask]
    return {"intensity_mean": float(values.mean()), "intensity_std": float(values.std())}


def texture_features(patch: np.ndarray, interior: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    """Edge density and uniform-LBP summaries of the interior (GLCM: see `glcm` / `glcm_features`)."""
    codes = local_binary_pattern(np.round(patch * 255).astype(np.uint8), LBP_POINTS, 1, "uniform")
    hist = np.bincount(codes[interior].astype(int), minlength=LBP_POINTS + 2) / interior.sum()
    nonzero = hist[hist > 0]
    return {
        "edge_density": float(edges.sum() / interior.sum()),
        "lbp_entropy": float(-(nonzero * np.log2(nonzero)).sum() / np.log2(LBP_POINTS + 2)),
        "lbp_flat_fraction": float(hist[LBP_POINTS]),
        "lbp_nonuniform_fraction": float(hist[LBP_POINTS + 1]),
    }


def glcm(patch: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Grey-level co-occurrences inside the crystal, distance 1, 4 directions: (levels, levels, 1, 4).

    The background takes level 0 and is dropped, so the outline does not count as texture.
    """
    levels = np.where(interior, 1 + np.round(patch * (GLCM_LEVELS - 1)), 0).astype(np.uint8)
    return graycomatrix(levels, distances=[1], angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                        levels=GLCM_LEVELS + 1, symmetric=True)[1:, 1:]


def glcm_features(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Direction-averaged GLCM properties of many crystals at once, (levels, levels, n, 4) -> n each.

    One `graycoprops` call per property for the whole table instead of one per crystal.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return {f"glcm_{prop}": graycoprops(matrices, prop).mean(axis=1) for prop in GLCM_PROPS}
