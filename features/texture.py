"""Intensity and texture inside a crystal: brightness, edges, GLCM and LBP summaries.

Texture is measured on a fixed-size square patch: the crop padded to a square and shrunk by area
averaging (as OpenCV's INTER_AREA, the standard anti-aliased downscale; computed only where the
crystal is), so its cost does not grow with the crystal and a crystal reads the same at any
magnification. Intensities are stretched
between the crystal's own 2nd and 98th percentiles first: SEM contrast and brightness vary from
image to image, the surface pattern of a crystal does not.

Each crystal contributes one patch (`texture_sample`); everything after it runs on a float32 stack
of patches at once (`texture_measures`; OpenCV filters take the patches as the channels of one
image), so the cost per crystal is array work, not Python calls. The edge map is the Sobel
magnitude of the Gaussian-smoothed patch and the LBP codes are scikit-image's
(`local_binary_pattern(patch, 8, 1, "uniform")`); the GLCM properties are `graycoprops`'.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
from skimage.feature import graycoprops

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


def texture_sample(image: np.ndarray, box: np.ndarray, corner: tuple[int, int] = (0, 0)
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The crystal's grey values and mask at TEXTURE_SIZE (`square_patch`, on the rows and columns
    the mask reaches: the texture measures read nothing beyond it; the mask, given as `box` at
    `corner` of the image, at the nearest pixel, `square_sample`), or None when no pixel of the
    mask survives the sampling (a crystal a pixel or two thin in a long crop: it has no texture to
    measure at this size)."""
    inside = square_sample(box, TEXTURE_SIZE, image.shape, corner)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if not len(rows):
        return None
    return square_patch(image, TEXTURE_SIZE, (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)), inside


def square_centres(shape: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column sampled for each of `size` output pixels when the array is centred on a
    zero-padded square (as `mcn.data.dataset.square_resize` places a crop); outside: < 0 or >= side."""
    h, w = shape
    side = max(h, w)
    centres = np.floor((np.arange(size) + 0.5) * side / size).astype(int)
    return centres - (side - h) // 2, centres - (side - w) // 2


def square_sample(array: np.ndarray, size: int, shape: tuple[int, int] | None = None,
                  corner: tuple[int, int] = (0, 0)) -> np.ndarray:
    """An image of `shape` (default: the array's own) centred on a zero-padded square, sampled at
    `size` x `size` nearest pixels, where the image is `array` at `corner` and zero elsewhere."""
    rows, cols = square_centres(shape or array.shape, size)
    rows, cols = rows - corner[0], cols - corner[1]
    out = np.zeros((size, size), array.dtype)
    (r0, r1), (c0, c1) = np.searchsorted(rows, [0, array.shape[0]]), np.searchsorted(cols, [0, array.shape[1]])
    out[r0:r1, c0:c1] = array.take(rows[r0:r1], axis=0).take(cols[c0:c1], axis=1)  # centres ascend
    return out


def square_patch(image: np.ndarray, size: int, rows: tuple[int, int] | None = None,
                 cols: tuple[int, int] | None = None) -> np.ndarray:
    """`image` centred on a zero-padded square (as `square_sample` places it) and shrunk to `size` x
    `size` by area averaging, the standard anti-aliased downscale (OpenCV's INTER_AREA): each patch
    pixel is the mean of the square's area under it. Only the patch rows `rows` and columns `cols`
    (start, stop; default all) are computed, zero elsewhere: two float32 products with the area
    weights (`area_weights`) of the image pixels under them, so the cost is that of the crystal's
    part of the crop, not of the whole square."""
    (h, w), side = image.shape, max(image.shape)
    top, left = (side - h) // 2, (side - w) // 2
    (r0, r1), (c0, c1) = rows or (0, size), cols or (0, size)

    def under(start: int, stop: int, offset: int, n: int) -> tuple[int, int]:  # image pixels under patch pixels
        return min(max(0, start * side // size - offset), n), min(max(0, -(-stop * side // size) - offset), n)

    (y0, y1), (x0, x1) = under(r0, r1, top, h), under(c0, c1, left, w)
    first, last = min(r0, c0), min(top + y0, left + x0)  # one block of weights serves rows and columns
    weights = area_weights(side, size, (first, max(r1, c1)), (last, max(top + y1, left + x1)))
    patch = np.zeros((size, size), np.float32)
    patch[r0:r1, c0:c1] = ((weights[r0 - first:r1 - first, top + y0 - last:top + y1 - last] @ image[y0:y1, x0:x1])
                           @ weights[c0 - first:c1 - first, left + x0 - last:left + x1 - last].T)
    return patch


def area_weights(side: int, size: int, patch: tuple[int, int], line: tuple[int, int]) -> np.ndarray:
    """Area-averaging weights of a line of `side` pixels shrunk to `size`, for the patch pixels
    `patch` (start, stop) and line pixels `line`: the share of patch pixel k's extent [k, k + 1)
    side / size that line pixel j covers, over that extent (so a whole row sums to 1), float32."""
    scale = side / size
    start = np.arange(*patch)[:, None] * scale
    covered = np.minimum(np.maximum(np.arange(line[0], line[1] + 1), start), start + scale)  # up to each pixel edge
    return ((covered[:, 1:] - covered[:, :-1]) / scale).astype(np.float32)


def intensity_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean and spread of the crystal's native grey values: `values.mean()` and `values.std()` to the
    bit (the same float32 reductions and divisions), without numpy's Python-level wrappers."""
    values = image[mask]
    mean = np.add.reduce(values) / len(values)
    deviation = values - mean
    spread = np.sqrt(np.add.reduce(deviation * deviation) / len(values))
    return {"intensity_mean": float(mean), "intensity_std": float(spread)}


STACK_BLOCK = 25
"""Patches measured at once: enough to spread the cost of each array call, few enough that the
float64 LBP temporaries stay in a core's cache and are reused rather than mapped afresh."""


def texture_measures(patches: np.ndarray, insides: np.ndarray) -> dict[str, np.ndarray]:
    """Facet count, edge density, LBP and GLCM summaries of a stack of `texture_sample` patches,
    (n, s, s) each, measured in blocks of `STACK_BLOCK` patches.

    Each patch is stretched to [0, 1] between its interior's 2nd and 98th percentiles (in
    float32); the background is filled with the crystal's median so the outline itself does not
    count as an internal edge, and the interior drops a one-pixel rim for the same reason.
    """
    blocks = [_texture_block(patches[k:k + STACK_BLOCK], insides[k:k + STACK_BLOCK])
              for k in range(0, len(patches), STACK_BLOCK)]
    out = {name: np.concatenate([values[name] for values, _ in blocks]) for name in blocks[0][0]}
    out.update(glcm_features(np.concatenate([matrices for _, matrices in blocks], axis=2)))
    return out


def _texture_block(patches: np.ndarray, insides: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`texture_measures` of a few patches, their GLCMs apart (see `glcm`)."""
    interior = _channelwise(insides.view(np.uint8), lambda block: cv2.erode(
        block, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)).view(bool)  # outside is background
    empty = ~interior.any(axis=(1, 2))
    interior[empty] = insides[empty]
    values, counts = _sorted_selection(patches, interior)
    lo, hi = (p.astype(np.float32) for p in _percentiles(values, counts, (2, 98)))
    scale = np.maximum(hi - lo, np.float32(MIN_CONTRAST))

    def stretch(x: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (x.ndim - 1)
        return np.clip((x - lo.reshape(shape)) / scale.reshape(shape), np.float32(0), np.float32(1))

    # the stretch is monotonic, so the stretched interior's median is the stretched median pixels
    lower, upper = (stretch(np.take_along_axis(values, k[:, None], 1)[:, 0]) for k in ((counts - 1) // 2, counts // 2))
    median = np.where(counts % 2 == 1, upper, (lower + upper) / np.float32(2))
    stretched = np.where(insides, stretch(patches), median[:, None, None])
    edges = edge_map(stretched, interior)
    out = {"facet_count": facets.facet_counts(edges, interior), "edge_density": edges.sum(axis=(1, 2)) / counts}
    out.update(_lbp_features(stretched, interior, counts))
    return out, glcm((1 + np.round(stretched * (GLCM_LEVELS - 1))).astype(np.uint8) * interior)


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


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_CHANNELS = 128
"""Most patches OpenCV filters in one call, as the channels of one image (OpenCV 5's CV_CN_MAX)."""


def _channelwise(stack: np.ndarray, f) -> np.ndarray:
    """`f` (an OpenCV filter) of every patch of a stack (n, h, w), the patches given as the channels
    of one image, so a stack costs a few calls rather than a few per patch."""
    blocks = []
    for start in range(0, len(stack), _CHANNELS):
        block = stack[start:start + _CHANNELS]
        filtered = f(np.ascontiguousarray(block.transpose(1, 2, 0)))
        blocks.append(filtered.reshape(filtered.shape[:2] + (len(block),)).transpose(2, 0, 1))
    return np.ascontiguousarray(np.concatenate(blocks))


def edge_map(stack: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Interior pixels on an intensity edge (facet boundaries, ridges, pits): the Sobel gradient
    magnitude (scikit-image's scale: [1, 2, 1] / 4 smoothing, divided by sqrt 2) of each patch
    smoothed by a Gaussian of sigma 1 (radius 4 sigma, 'reflect' border, as scipy's), with OpenCV."""

    def magnitude(block: np.ndarray) -> np.ndarray:
        smooth = cv2.GaussianBlur(block, (9, 9), 1.0, borderType=cv2.BORDER_REFLECT)
        along_cols, along_rows = (cv2.Sobel(smooth, cv2.CV_32F, dx, 1 - dx, ksize=3, scale=0.25,
                                            borderType=cv2.BORDER_REFLECT) for dx in (1, 0))
        return cv2.magnitude(along_cols, along_rows)

    return (_channelwise(stack.astype(np.float32, copy=False), magnitude) > EDGE_THRESHOLD * math.sqrt(2)) & interior


def _lbp_features(stack: np.ndarray, interior: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Uniform-LBP(8, 1) summaries of the interiors (`uniform_lbp` codes of the 8-bit patches)."""
    bins = LBP_POINTS + 2
    codes = np.maximum(uniform_lbp(np.round(stack * 255).astype(np.uint8)), np.uint8(bins) * ~interior)  # outside: bins
    owner = np.arange(len(stack))[:, None, None] * (bins + 1)
    hist = np.bincount((codes + owner).ravel(), minlength=len(stack) * (bins + 1)).reshape(-1, bins + 1)[:, :bins]
    hist = hist / counts[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(hist > 0, hist * np.log2(hist), 0.0).sum(axis=1) / np.log2(bins)
    return {"lbp_entropy": entropy, "lbp_flat_fraction": hist[:, LBP_POINTS],
            "lbp_nonuniform_fraction": hist[:, LBP_POINTS + 1]}


def uniform_lbp(stack: np.ndarray) -> np.ndarray:
    """`skimage.feature.local_binary_pattern(patch, 8, 1, "uniform")` of every patch of a uint8
    stack (n, h, w) at once, as integers: the same neighbour positions (rounded to 5 decimals), the
    same bilinear interpolation in the same order of floating-point operations at the same in-patch
    coordinates, zeros beyond the border, and its count of 0/1 changes (7, not wrapping around),
    so the codes are identical; one call per patch cost as much as everything else in the texture.

    The zero-padded patches are read as one flat line (`_flat_padded`), so each neighbour is one
    contiguous slice. Neighbours on the pixel grid are compared as integers; the off-grid ones
    interpolate along the columns first, as scikit-image does, once per column offset (two
    neighbours share it), then along the rows.
    """
    n, h, w = stack.shape
    flat, width, first, count = _flat_padded(stack)
    wide = None  # the float64 values, for the interpolated neighbours

    def span(values: np.ndarray, step: int, extra: int = 0) -> np.ndarray:  # the pixels `step` away
        return values[first - extra + step:first + step + count + extra]

    codes = np.zeros(count, np.uint8)
    changes = np.zeros(count, np.uint8)
    top, bottom = np.empty(count), np.empty(count)
    along_cols = {}  # column offset -> (1 - fc) * left + fc * right, from a row above to a row below
    previous = None
    for dr, dc in _LBP_OFFSETS:
        r0, r1, c0, c1 = math.floor(dr), math.ceil(dr), math.floor(dc), math.ceil(dc)
        if r0 == r1 and c0 == c1:  # on the grid: the interpolation returns the pixel itself
            signed = span(flat, r0 * width + c0) >= span(flat, 0)
        else:  # skimage's weights at the sample positions (row r, column c), and its order of operations
            if wide is None:
                wide = flat.astype(np.float64)
            if dc not in along_cols:
                left, right = _lbp_weights(n, h, w, dc, "columns")
                along_cols[dc] = np.multiply(left, span(wide, c0, width))
                along_cols[dc] += np.multiply(right, span(wide, c1, width), out=np.empty_like(along_cols[dc]))
            above, below = _lbp_weights(n, h, w, dr, "rows")
            np.multiply(above, along_cols[dc][(1 + r0) * width:(1 + r0) * width + count], out=top)
            np.multiply(below, along_cols[dc][(1 + r1) * width:(1 + r1) * width + count], out=bottom)
            top += bottom
            signed = top >= span(wide, 0)  # the sign of texture - centre, as scikit-image tests it
        codes += signed
        if previous is not None:
            changes += signed != previous
        previous = signed
    out = np.zeros(flat.shape, np.uint8)
    out[first:first + count] = np.maximum(codes, np.uint8(LBP_POINTS + 1) * (changes > 2))  # codes <= 8 else
    return out.reshape(n, h + 2, width)[:, 1:-1, 1:-1]


_LBP_OFFSETS = tuple(zip(np.round(-np.sin(2 * np.pi * np.arange(LBP_POINTS) / LBP_POINTS), 5).tolist(),
                         np.round(np.cos(2 * np.pi * np.arange(LBP_POINTS) / LBP_POINTS), 5).tolist()))
"""(row, column) offset of each LBP neighbour, as scikit-image places them (rounded to 5 decimals)."""


def _flat_padded(stack: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """The patches of a stack (n, h, w), each padded with one zero pixel all round, end to end on
    one flat line, so a shift by (a, b) pixels is a shift by a (w + 2) + b along it and never
    reaches another patch's pixels: the line, the padded width, the position of the first patch's
    pixel (0, 0) and how many positions reach from it to the last patch's pixel (h - 1, w - 1)
    (the pad positions among them are computed and ignored)."""
    n, h, w = stack.shape
    padded = np.zeros((n, h + 2, w + 2), stack.dtype)
    padded[:, 1:-1, 1:-1] = stack
    width = w + 2
    return padded.reshape(-1), width, width + 1, (n * (h + 2) - 3) * width + w


@functools.lru_cache(maxsize=16)
def _lbp_weights(n: int, h: int, w: int, offset: float, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's bilinear weights (1 - f, f), f = (x + offset) - floor(x + offset), at each
    position of `_flat_padded`'s line: x is the pixel's column ("columns", over one more padded row
    above and below) or row ("rows"); a stack of one shape always uses the same ones."""
    width = w + 2
    first, count = width + 1, (n * (h + 2) - 3) * width + w
    if axis == "columns":
        x = np.arange(first - width, first + count + width) % width - 1
    else:
        x = np.arange(first, first + count) % ((h + 2) * width) // width - 1
    x = x + offset
    f = x - np.floor(x)
    weights = 1 - f, f
    for array in weights:
        array.flags.writeable = False
    return weights


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
    padded = np.zeros((n, h + 1, w + 1), np.intp)  # a background column right and row below each patch,
    padded[:, :h, :w] = levels  # so on one flat line a step to a neighbour never pairs two patches' pixels
    second = padded.reshape(-1)
    first = second * size + np.repeat(np.arange(n) * size * size, (h + 1) * (w + 1))  # (patch, i, .)
    out = np.empty((GLCM_LEVELS, GLCM_LEVELS, n, len(GLCM_OFFSETS)), np.uint32)
    for k, (dr, dc) in enumerate(GLCM_OFFSETS):
        step = dr * (w + 1) + dc
        counts = np.bincount(first[:-step] + second[step:], minlength=n * size * size)
        counts = counts.reshape(n, size, size)
        out[:, :, :, k] = (counts + counts.transpose(0, 2, 1))[:, 1:, 1:].transpose(1, 2, 0)
    return out


def glcm_features(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Direction-averaged GLCM properties of a stack of crystals, (levels, levels, n, 4) -> n each:
    one `graycoprops` call per property for the stack instead of one per crystal."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {f"glcm_{prop}": graycoprops(matrices, prop).mean(axis=1) for prop in GLCM_PROPS}
