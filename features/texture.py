"""Intensity and texture inside a crystal: brightness, edges, GLCM and LBP summaries.

Texture is measured on a fixed-size square patch (the crop padded to a square and resampled), so
its cost does not grow with the crystal and a crystal reads the same at any magnification.
Intensities are stretched between the crystal's own 2nd and 98th percentiles first: SEM contrast
and brightness vary from image to image, the surface pattern of a crystal does not.

Each crystal contributes one patch (`texture_sample`); everything after it runs on a stack of
patches at once (`texture_measures`), so the cost per crystal is array work, not Python calls.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import graycoprops
from skimage.filters.edges import SOBEL_EDGE, SOBEL_SMOOTH

from features import facets

TEXTURE_SIZE = 48
"""Side of the square patch texture is measured on, pixels."""

GLCM_LEVELS = 16
EDGE_THRESHOLD = 0.12
"""Sobel magnitude of the smoothed, contrast-stretched patch above which a pixel is an edge."""

MIN_CONTRAST = 0.05
"""Floor of the stretch range, so sensor noise on a featureless crystal is not stretched into edges."""

LBP_POINTS = 8
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")


def texture_sample(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The crystal's grey values and mask at TEXTURE_SIZE (anti-aliased by a Gaussian of sigma
    (shrink - 1) / 2 when shrinking), or None when no pixel of the mask survives the sampling (a
    crystal a pixel or two thin in a long crop: it has no texture to measure at this size)."""
    inside = square_sample(mask, TEXTURE_SIZE)
    if not inside.any():
        return None
    shrink = max(image.shape) / TEXTURE_SIZE
    patch = smooth_sample(image, (shrink - 1) / 2, TEXTURE_SIZE) if shrink > 1 else square_sample(image, TEXTURE_SIZE)
    return patch, inside


def square_centres(shape: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column sampled for each of `size` output pixels when the array is centred on a
    zero-padded square (as `mcn.data.dataset.square_resize` places a crop); outside: < 0 or >= side."""
    h, w = shape
    side = max(h, w)
    centres = np.floor((np.arange(size) + 0.5) * side / size).astype(int)
    return centres - (side - h) // 2, centres - (side - w) // 2


def square_sample(array: np.ndarray, size: int) -> np.ndarray:
    """`array` centred on a zero-padded square, sampled at `size` x `size` nearest pixels."""
    rows, cols = square_centres(array.shape, size)
    out = np.zeros((size, size), array.dtype)
    (r0, r1), (c0, c1) = np.searchsorted(rows, [0, array.shape[0]]), np.searchsorted(cols, [0, array.shape[1]])
    out[r0:r1, c0:c1] = array.take(rows[r0:r1], axis=0).take(cols[c0:c1], axis=1)  # centres ascend
    return out


def smooth_sample(image: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """`square_sample(ndi.gaussian_filter(image, sigma), size)` without filtering the pixels that
    are not sampled (`gaussian_sample`: same weights and 'reflect' border as scipy), so a large crop
    costs a few taps per sampled pixel instead of a full filter pass."""
    out = np.zeros((size, size))
    rows, cols, values = gaussian_sample(image, *square_centres(image.shape, size), sigma, border="reflect")
    out[np.ix_(rows, cols)] = values
    return out.astype(image.dtype)


def gaussian_sample(array: np.ndarray, at_rows: np.ndarray, at_cols: np.ndarray, sigma: float,
                    border: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scipy's separable Gaussian filter of a 2-D array evaluated only at the grid of rows `at_rows`
    and columns `at_cols`: (rows kept, columns kept, float64 values), from the kernel taps there
    (`gaussian_taps`), rows first."""
    (rows, row_taps, row_weights), (cols, col_taps, col_weights) = (
        gaussian_taps(at, n, sigma, border) for at, n in zip((at_rows, at_cols), array.shape))
    along_rows = np.einsum("rk,rkw->rw", row_weights, array[row_taps])
    return rows, cols, np.einsum("ck,rck->rc", col_weights, along_rows[:, col_taps])


def gaussian_taps(at: np.ndarray, n: int, sigma: float, border: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where scipy's Gaussian (radius 4 sigma) centred on the positions `at` of a line of n pixels
    reads the line: the positions kept, the pixel under each tap, (kept, taps), and its weight, so
    that `(weights * line[pixels]).sum(1)` is the filtered line there. border: "reflect" (scipy's
    default, -1 - k is pixel k and n + k is pixel n - 1 - k; positions off the line are dropped) or
    "constant" (zeros beyond the line: those taps weigh 0)."""
    offsets, kernel = _gaussian_kernel(sigma)
    if border == "reflect":
        kept = np.flatnonzero((at >= 0) & (at < n))
        pixels = np.mod(at[kept, None] + offsets, 2 * n)
        pixels = np.where(pixels >= n, 2 * n - 1 - pixels, pixels)
        return kept, pixels, np.broadcast_to(kernel, pixels.shape)
    pixels = at[:, None] + offsets
    inside = (pixels >= 0) & (pixels < n)
    return np.arange(len(at)), np.where(inside, pixels, 0), np.where(inside, kernel, 0.0)


@functools.lru_cache(maxsize=4096)
def _gaussian_kernel(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and weights of scipy's Gaussian kernel (radius 4 sigma); crops of one size share it."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma ** 2 * offsets ** 2)
    kernel /= kernel.sum()
    offsets.flags.writeable = kernel.flags.writeable = False
    return offsets, kernel


def intensity_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean and spread of the crystal's native grey values."""
    values = image[mask]
    return {"intensity_mean": float(values.mean()), "intensity_std": float(values.std())}


def texture_measures(patches: np.ndarray, insides: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Facet count, edge density and LBP summaries of a stack of `texture_sample` patches, (n, s, s)
    each, and their GLCMs, (levels, levels, n, 4) (see `glcm_features`).

    Each patch is stretched to [0, 1] between its interior's 2nd and 98th percentiles; the
    background is filled with the crystal's median so the outline itself does not count as an
    internal edge, and the interior drops a one-pixel rim for the same reason.
    """
    interior = ndi.binary_erosion(insides, facets.STACK_CONNECTIVITY)
    empty = ~interior.any(axis=(1, 2))
    interior[empty] = insides[empty]
    values, counts = _sorted_selection(patches, interior)
    lo, hi = _percentiles(values, counts, (2, 98))
    scale = np.maximum(hi - lo, MIN_CONTRAST)

    def stretch(x: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (x.ndim - 1)
        return np.clip((x - lo.reshape(shape)) / scale.reshape(shape), 0.0, 1.0)

    # the stretch is monotonic, so the stretched interior's median is the stretched median pixels
    lower, upper = (stretch(np.take_along_axis(values, k[:, None], 1)[:, 0]) for k in ((counts - 1) // 2, counts // 2))
    stretched = np.where(insides, stretch(patches), np.where(counts % 2 == 1, upper, (lower + upper) / 2)[:, None, None])
    edges = edge_map(stretched, interior)
    out = {"facet_count": facets.facet_counts(edges, interior), "edge_density": edges.sum(axis=(1, 2)) / counts}
    out.update(_lbp_features(stretched, interior, counts))
    levels = np.where(interior, 1 + np.round(stretched * (GLCM_LEVELS - 1)), 0).astype(np.uint8)
    return out, glcm(levels)


def _percentiles(values: np.ndarray, counts: np.ndarray, q: tuple[float, ...]) -> list[np.ndarray]:
    """`np.percentile(row[:count], q)` of every row of sorted values (linear method, float64)."""
    out = []
    for percent in q:
        virtual = percent / 100.0 * (counts - 1)
        below = np.floor(virtual).astype(int)
        gamma = virtual - below
        a = np.take_along_axis(values, below[:, None], 1)[:, 0]
        b = np.take_along_axis(values, np.minimum(below + 1, counts - 1)[:, None], 1)[:, 0]
        diff = b - a  # in the data's dtype, then float64, as numpy's own interpolation
        out.append(np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma))
    return out


def _sorted_selection(stack: np.ndarray, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each slice's selected values in ascending order (then +inf), and how many there are."""
    values = np.where(selected, stack, np.inf).reshape(len(stack), -1)
    values.sort(axis=1)
    return values, selected.reshape(len(stack), -1).sum(axis=1)


def edge_map(stack: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Interior pixels on an intensity edge (facet boundaries, ridges, pits): scikit-image's Sobel
    magnitude of each Gaussian-smoothed patch, in one pass over the stack."""
    smooth = ndi.gaussian_filter(stack, (0.0, 1.0, 1.0))
    magnitude = np.zeros_like(smooth)
    for along_rows, along_cols in ((SOBEL_EDGE, SOBEL_SMOOTH), (SOBEL_SMOOTH, SOBEL_EDGE)):  # separable kernels
        gradient = ndi.convolve1d(ndi.convolve1d(smooth, along_rows, axis=1, mode="reflect"), along_cols, axis=2,
                                  mode="reflect")
        magnitude += gradient * gradient
    return (np.sqrt(magnitude) / np.sqrt(2) > EDGE_THRESHOLD) & interior


def _lbp_features(stack: np.ndarray, interior: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Uniform-LBP(8, 1) summaries of the interiors (`uniform_lbp` codes of the 8-bit patches)."""
    bins = LBP_POINTS + 2
    codes = uniform_lbp(np.round(stack * 255).astype(np.uint8))
    owner = np.broadcast_to(np.arange(len(stack))[:, None, None], codes.shape)
    hist = np.bincount((owner * bins + codes)[interior], minlength=len(stack) * bins).reshape(-1, bins)
    hist = hist / counts[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(hist > 0, hist * np.log2(hist), 0.0).sum(axis=1) / np.log2(bins)
    return {"lbp_entropy": entropy, "lbp_flat_fraction": hist[:, LBP_POINTS],
            "lbp_nonuniform_fraction": hist[:, LBP_POINTS + 1]}


def uniform_lbp(stack: np.ndarray) -> np.ndarray:
    """`skimage.feature.local_binary_pattern(patch, 8, 1, "uniform")` of every patch of a stack
    (n, h, w) at once, as integers: the same neighbour positions (rounded to 5 decimals), the same
    bilinear interpolation in the same order of floating-point operations at the same in-patch
    coordinates, zeros beyond the border, and its count of 0/1 changes (7, not wrapping around),
    so the codes are identical; one call per patch cost as much as everything else in the texture."""
    n, h, w = stack.shape
    padded = np.pad(stack.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    centre = padded[:, 1:-1, 1:-1]
    angles = 2 * np.pi * np.arange(LBP_POINTS, dtype=np.float64) / LBP_POINTS
    codes = np.zeros(stack.shape, np.uint8)
    changes = np.zeros(stack.shape, np.uint8)
    top, bottom = np.empty_like(centre), np.empty_like(centre)

    def near(a: int, b: int) -> np.ndarray:  # the pixel (a, b) away from each pixel, as a shifted view
        return padded[:, 1 + a:1 + a + h, 1 + b:1 + b + w]

    previous = None
    for dr, dc in zip(np.round(-np.sin(angles), 5), np.round(np.cos(angles), 5)):
        r0, r1, c0, c1 = math.floor(dr), math.ceil(dr), math.floor(dc), math.ceil(dc)
        if r0 == r1 and c0 == c1:  # on the grid: the interpolation returns the pixel itself
            signed = near(r0, c0) >= centre
        else:  # skimage's weights at the sample positions, and its order of operations
            fr = ((np.arange(h) + dr) - np.floor(np.arange(h) + dr))[:, None]
            fc = (np.arange(w) + dc) - np.floor(np.arange(w) + dc)
            np.multiply(1 - fc, near(r0, c0), out=top)
            top += fc * near(r0, c1)
            np.multiply(1 - fc, near(r1, c0), out=bottom)
            bottom += fc * near(r1, c1)
            top *= 1 - fr
            bottom *= fr
            top += bottom
            top -= centre
            signed = top >= 0
        codes += signed
        if previous is not None:
            changes += signed != previous
        previous = signed
    return np.where(changes <= 2, codes, LBP_POINTS + 1)


GLCM_OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))
"""(row, column) steps of `graycomatrix` at distance 1 and angles 0, 45, 90 and 135 deg."""


def glcm(levels: np.ndarray) -> np.ndarray:
    """Symmetric grey-level co-occurrences inside each crystal of a stack (n, h, w), distance 1, the
    4 directions of `GLCM_OFFSETS`: (levels, levels, n, 4), as `graycomatrix` gives per patch.

    `levels` holds 1 + the grey level inside and 0 outside; the background level is dropped, so
    the outline does not count as texture.
    """
    n, h, w = levels.shape
    size = GLCM_LEVELS + 1
    first_index = np.arange(n, dtype=np.intp)[:, None, None] * size * size + levels.astype(np.intp) * size  # (patch, i, .)
    out = np.empty((GLCM_LEVELS, GLCM_LEVELS, n, len(GLCM_OFFSETS)), np.uint32)
    for k, (dr, dc) in enumerate(GLCM_OFFSETS):
        pairs = first_index[:, :h - dr, max(0, -dc):w - max(0, dc)] + levels[:, dr:, max(0, dc):w + min(0, dc)]
        counts = np.bincount(pairs.ravel(), minlength=n * size * size)
        counts = counts.reshape(n, size, size)
        out[:, :, :, k] = (counts + counts.transpose(0, 2, 1))[:, 1:, 1:].transpose(1, 2, 0)
    return out


def glcm_features(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Direction-averaged GLCM properties of many crystals at once, (levels, levels, n, 4) -> n each.

    One `graycoprops` call per property for the whole table instead of one per crystal.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return {f"glcm_{prop}": graycoprops(matrices, prop).mean(axis=1) for prop in GLCM_PROPS}
