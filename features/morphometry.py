"""Per-crystal morphometry: size, shape, facets, texture and quality flags as a named-property table.

In the spirit of scikit-image's `regionprops_table`: every column is a registered property with a
unit and a description (`PROPERTIES`), names put the quantity first so related columns sort
together, and physical units enter only through an explicit pixel size. Size columns come twice,
`<name>_px` (pixels, always) and `<name>_nm` / `area_um2` (NaN where the pixel size is unknown);
ratios, angles and counts are scale-free and have one column.

Each mask is reduced to its largest 8-connected component with holes filled: a crystal is one solid
body, and islands or holes are segmentation debris. Outline measures use the sub-pixel contour at
the 0.5 level (so a rasterised disc has circularity ~1); Feret diameters use the convex hull of the
pixel corners (so a w x h rectangle of pixels has Feret widths w and h).

Speed (`python -m benchmarks.feature_speed`): a crystal is measured on its mask's bounding box, the
outline is smoothed only at the grid points it is traced on, the outlines of a chunk of crystals
are traced at once (`contours.closed_contours`), and their texture columns are computed on one
stack of fixed-size patches; with `n_jobs`, this process and forked ones take chunks of crystals
from a shared counter and write their values into one shared array; `properties=` skips the
measurements (`_GROUPS`) no wanted column needs.
"""

from __future__ import annotations

import functools
import gc
import math
import mmap
import multiprocessing
import traceback
import warnings
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
from skimage.measure import find_contours
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from features import facets, texture
from features.contours import closed_contours
from mcn.data.patches import solid_body
from mcn.errors import DataError

MIN_AREA_PX = 4
"""Masks smaller than this have an area and nothing else: no outline or texture to measure."""

OUTLINE_SIGMA = 1.0
OUTLINE_GRID = 64
OUTLINE_POINTS = 120
"""Corners and notches are searched on at most about this many outline points (every k-th point):
enough for a tolerance of a few percent of the diameter, and the cost no longer grows with size."""

_UNSAMPLED = "_texture_unsampled"
"""Key of a measured row whose mask vanished at the texture size (see `texture.texture_sample`)."""

PARALLEL_CHUNK = 50
"""Crystals measured at once (one texture stack), and the share a process takes of a parallel run:
small enough that the last one leaves the other processes idle for little."""

OCCLUSION_SOLIDITY = 0.85
OCCLUSION_CONCAVITY = 0.12
"""A crystal is `occluded_likely` below this solidity or above this concavity depth (share of its
equivalent diameter): a neighbour or matrix hiding part of it bites a notch into the outline."""


@dataclass(frozen=True)
class Property:
    """One column of the morphometry table."""

    name: str
    unit: str
    description: str
    group: str
    dtype: str = "float64"
    classifier: bool = False
    """Used as classifier input by `handcrafted_features` (scale-free and not an acquisition artefact)."""


_SIZES = (
    ("area", 2, "area of the mask"),
    ("perimeter", 1, "length of the sub-pixel outline (smoothed against the pixel staircase)"),
    ("diameter_equivalent", 1, "diameter of the disc with the same area"),
    ("axis_major_length", 1, "major axis of the ellipse with the same second moments (the apparent "
                             "crystal size of the literature)"),
    ("axis_minor_length", 1, "minor axis of the ellipse with the same second moments"),
    ("feret_max", 1, "maximum Feret (caliper) diameter"),
    ("feret_min", 1, "minimum Feret diameter, by rotating calipers on the convex hull"),
)

_SCALE_FREE = (
    ("aspect_ratio_axes", "1", "shape", "axis_major_length / axis_minor_length"),
    ("aspect_ratio_feret", "1", "shape", "caliper length perpendicular to the minimum Feret / feret_min "
                                         "(elongation of the tightest bounding rectangle)"),
    ("convexity", "1", "shape", "convex hull perimeter / perimeter (1 for a convex outline)"),
    ("solidity", "1", "shape", "area / convex hull area of the outline"),
    ("circularity", "1", "shape", "4 pi area / perimeter^2 of the outline (1 for a disc)"),
    ("roundness", "1", "shape", "4 area / (pi axis_major_length^2)"),
    ("eccentricity", "1", "shape", "eccentricity of the moment ellipse (0 for a disc)"),
    ("extent", "1", "shape", "area / bounding-box area"),
    ("concavity_max", "1", "shape", "deepest notch of the outline below its convex hull / diameter_equivalent"),
    ("vertex_count", "count", "facets", "corners of the outline polygon simplified with a tolerance of "
                                        f"{facets.VERTEX_TOLERANCE} diameter_equivalent"),
    ("corner_angle_mean_deg", "deg", "facets", "mean interior angle at the outline corners"),
    ("corner_angle_std_deg", "deg", "facets", "spread of the interior corner angles"),
    ("corner_angle_min_deg", "deg", "facets", "sharpest interior corner angle"),
    ("corner_concave_count", "count", "facets", "concave corners (interior angle above "
                                                f"{360 - facets.STRAIGHT_ANGLE_DEG:.0f} deg)"),
    ("facet_count", "count", "facets", "flat shaded regions inside the crystal, separated by internal edges "
                                       f"(on the {texture.TEXTURE_SIZE} px texture patch)"),
    ("intensity_mean", "1", "texture", "mean grey value inside the mask (image scale [0, 1])"),
    ("intensity_std", "1", "texture", "grey value standard deviation inside the mask"),
    ("edge_density", "1", "texture", "share of interior pixels on an intensity edge (texture patch)"),
    *((f"glcm_{p}", "1", "texture", f"GLCM {p}, distance 1, averaged over 4 directions")
      for p in texture.GLCM_PROPS),
    ("lbp_entropy", "1", "texture", "entropy of the uniform LBP(8, 1) histogram, in [0, 1]"),
    ("lbp_flat_fraction", "1", "texture", "share of flat uniform-LBP codes (no darker neighbour)"),
    ("lbp_nonuniform_fraction", "1", "texture", "share of non-uniform LBP codes (noisy texture)"),
)
_COUNTS = {"vertex_count", "corner_concave_count", "facet_count"}
_NOT_CLASSIFIER = {"intensity_mean"}
"""Absolute brightness depends on the SEM settings of the image, not on the crystal."""


def _registry() -> dict[str, Property]:
    props = {}
    for name, dim, what in _SIZES:
        props[f"{name}_px"] = Property(f"{name}_px", "px" if dim == 1 else "px^2", f"{what}, pixels", "size",
                                       "Int64" if name == "area" else "float64")
        physical = f"{name}_nm" if dim == 1 else f"{name}_um2"
        props[physical] = Property(physical, "nm" if dim == 1 else "um^2",
                                   f"{what}, {'nanometres' if dim == 1 else 'square micrometres'} "
                                   "(NaN where the pixel size is unknown)", "size")
    for name, unit, group, what in _SCALE_FREE:
        props[name] = Property(name, unit, what, group, "Int64" if name in _COUNTS else "float64",
                               classifier=name not in _NOT_CLASSIFIER)
    props["orientation_deg"] = Property("orientation_deg", "deg", "angle between the image row axis and the "
                                        "major axis, counter-clockwise, in [-90, 90] (as scikit-image)", "shape")
    props["touches_border"] = Property("touches_border", "bool", "the crystal is cut by its image border "
                                       "(truncated outline; NA when not given)", "quality", "boolean")
    props["occluded_likely"] = Property("occluded_likely", "bool", f"solidity < {OCCLUSION_SOLIDITY} or "
                                        f"concavity_max > {OCCLUSION_CONCAVITY}: part of the crystal is "
                                        "probably hidden", "quality", "boolean")
    return props


PROPERTIES: dict[str, Property] = _registry()
"""Every column of `morphometry_table`, in table order."""

HANDCRAFTED_COLUMNS: tuple[str, ...] = tuple(name for name, p in PROPERTIES.items() if p.classifier)
"""The scale-free classifier inputs: shape, facet and texture measures (`features.handcrafted` adds
the sizes). Orientation is left out because a rotated crystal is the same crystal, `touches_border`
because it records how the image was framed, not what the crystal is."""

_GROUPS: dict[str, tuple[str, ...]] = {
    "ellipse": ("axis_major_length_px", "axis_major_length_nm", "axis_minor_length_px", "axis_minor_length_nm",
                "aspect_ratio_axes", "roundness", "eccentricity", "orientation_deg"),
    "outline": ("perimeter_px", "perimeter_nm", "convexity", "solidity", "circularity", "concavity_max",
                "vertex_count", "corner_angle_mean_deg", "corner_angle_std_deg", "corner_angle_min_deg",
                "corner_concave_count", "occluded_likely"),
    "feret": ("feret_max_px", "feret_max_nm", "feret_min_px", "feret_min_nm", "aspect_ratio_feret"),
    "intensity": ("intensity_mean", "intensity_std"),
    "texture": tuple(name for name, p in PROPERTIES.items() if p.group in ("texture", "facets")
                     and name not in ("vertex_count", "intensity_mean", "intensity_std")
                     and not name.startswith("corner_")),
}
"""The measurements a selection of columns may skip, and the columns that need them; area, the
equivalent diameter and the extent are always made (they cost nothing once the mask is solid)."""

_IMAGE_GROUPS = frozenset({"intensity", "texture"})

TEXTURE_COLUMNS: tuple[str, ...] = _GROUPS["texture"]
"""The columns measured on the fixed-size texture patch (facets, edges, GLCM, LBP): the costliest
family, and one a selection may leave out."""

_PIXEL_COLUMNS = [name for name in PROPERTIES
                  if not name.endswith(("_nm", "_um2")) and name != "touches_border"]
_MEASURED = _PIXEL_COLUMNS + [_UNSAMPLED]
"""The values `_measure_chunk` gives per crystal, in this order, as float64 (NaN: not measured)."""
_MEASURED_INDEX = {name: k for k, name in enumerate(_MEASURED)}


def properties_table() -> pd.DataFrame:
    """The property registry as a table (name, unit, group, classifier input, description)."""
    return pd.DataFrame([{"name": p.name, "unit": p.unit, "group": p.group, "classifier": p.classifier,
                          "description": p.description} for p in PROPERTIES.values()])


def morphometry_table(masks: Sequence[np.ndarray], images: Sequence[np.ndarray] | None = None,
                      pixel_size_nm: float | Sequence[float] | None = None,
                      touches_border: Sequence[bool] | None = None, n_jobs: int = 1,
                      properties: Sequence[str] | None = None, progress: bool = False) -> pd.DataFrame:
    """One row per crystal mask, the columns of `PROPERTIES` (units in `.attrs["units"]`).

    properties: the columns wanted, in table order (None: all), as `regionprops_table`'s
        `properties`; only the measurements they need are made (`_GROUPS`: the outline, Feret and
        texture measurements are the costly ones).
    progress: show a progress bar over the crystals.
    images: the crystals' grey crops, same shapes as the masks, for facet and texture columns (NaN
        without them).
    pixel_size_nm: one value for all crystals or one per crystal; NaN or None means unknown and gives
        NaN physical columns: nothing is converted on a guessed scale.
    touches_border: per crystal, from the source image; NA when not given.
    n_jobs: processes measuring the crystals (this one and n_jobs - 1 forked ones); the table is the
        same for any number.
    Masks too small to measure (fewer than `MIN_AREA_PX` pixels, or empty) give NaN rows and one
    warning naming them.
    """
    masks = list(masks)
    n = len(masks)
    wanted = _wanted(properties)
    groups = frozenset(g for g, columns in _GROUPS.items() if wanted & set(columns))
    images = _check_images(images, masks) if groups & _IMAGE_GROUPS else None
    pixel = _pixel_sizes(pixel_size_nm, n)
    items = [(_check_mask(mask, i), images[i] if images is not None else None) for i, mask in enumerate(masks)]
    measured = _measure_all(items, groups, n_jobs, progress)
    table = pd.DataFrame(measured[:, :-1], columns=_PIXEL_COLUMNS)
    for name, dim, _ in _SIZES:
        if dim == 1:
            table[f"{name}_nm"] = table[f"{name}_px"].astype(float) * pixel
        else:
            table[f"{name}_um2"] = table[f"{name}_px"].astype(float) * (pixel / 1000.0) ** 2
    table["touches_border"] = _border(touches_border, n)
    _warn_small(table)
    columns = [name for name in PROPERTIES if name in wanted]
    table = table[columns].astype({name: PROPERTIES[name].dtype for name in columns})
    table.attrs["units"] = {name: PROPERTIES[name].unit for name in columns}
    _warn_unsampled(np.flatnonzero(measured[:, -1] == 1).tolist())
    return table


def _check_mask(mask: np.ndarray, i: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"crystal {i}: mask must be a 2-D array; got shape {mask.shape}")
    return np.ascontiguousarray(mask, dtype=bool)


def _check_images(images, masks: list) -> list | None:
    if images is None:
        return None
    images = list(images)
    if len(images) != len(masks):
        raise DataError(f"got {len(images)} images for {len(masks)} masks; give one image per mask")
    for i, (image, mask) in enumerate(zip(images, masks)):
        if np.shape(image) != np.shape(mask):
            raise DataError(f"crystal {i}: image shape {np.shape(image)} differs from mask shape {np.shape(mask)}")
    return images


def _pixel_sizes(pixel_size_nm, n: int) -> np.ndarray:
    """Per-crystal pixel size in nm, NaN where unknown; refuses non-positive sizes."""
    if pixel_size_nm is None:
        return np.full(n, np.nan)
    sizes = np.broadcast_to(np.asarray(pixel_size_nm, dtype=np.float64), (n,)) if np.ndim(pixel_size_nm) == 0 \
        else np.asarray(pixel_size_nm, dtype=np.float64)
    if sizes.shape != (n,):
        raise DataError(f"pixel_size_nm must be one value or one per crystal ({n}); got shape {sizes.shape}")
    bad = np.isfinite(sizes) & (sizes <= 0) | np.isinf(sizes)
    if bad.any():
        raise DataError(f"pixel_size_nm must be positive (NaN for unknown); got {sizes[bad][0]} "
                        f"for crystal {np.flatnonzero(bad)[0]}")
    return sizes


def _border(touches_border, n: int) -> pd.arrays.BooleanArray:
    if touches_border is None:
        return pd.array([pd.NA] * n, dtype="boolean")
    flags = pd.array(np.asarray(touches_border, dtype=object), dtype="boolean")
    if len(flags) != n:
        raise DataError(f"touches_border has {len(flags)} values for {n} crystals")
    return flags


def _wanted(properties: Sequence[str] | None) -> set[str]:
    if properties is None:
        return set(PROPERTIES)
    if isinstance(properties, str):
        properties = [properties]
    unknown = [p for p in properties if p not in PROPERTIES]
    if unknown:
        raise DataError(f"unknown morphometry properties {unknown}; see features.morphometry.PROPERTIES")
    return set(properties)


def _measure_all(items: list[tuple], groups: frozenset[str], n_jobs: int, progress: bool = False) -> np.ndarray:
    """`_measure_chunk` over every (mask, image), `PARALLEL_CHUNK` at a time, shared by this process
    and `n_jobs - 1` forked ones when worth it (`_measure_shared`)."""
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1; got {n_jobs}")
    bar = tqdm(total=len(items), desc="morphometry", unit="crystal", disable=not progress)
    with threadpool_limits(1, user_api="blas"):  # its threads cost more than they give on small matrices
        if n_jobs == 1 or len(items) < 2 * PARALLEL_CHUNK:
            out = np.concatenate([np.empty((0, len(_MEASURED)))] + [
                _measure_chunk(items[start:start + PARALLEL_CHUNK], groups, bar)
                for start in range(0, len(items), PARALLEL_CHUNK)])
        else:
            out = _measure_shared(items, groups, n_jobs, bar)
    bar.close()
    return out


def _measure_shared(items: list[tuple], groups: frozenset[str], n_jobs: int, bar: tqdm) -> np.ndarray:
    """`_measure_all` in this process and `n_jobs - 1` forked ones: each takes the next chunk nobody
    has taken and writes its values into one array in shared memory, so the forked processes
    inherit the crystals, no values are pickled, and this process works instead of waiting. A
    failure in a forked process is raised here, with its traceback."""
    out = np.frombuffer(mmap.mmap(-1, len(items) * len(_MEASURED) * 8), np.float64).reshape(len(items), -1)
    context = multiprocessing.get_context("fork")
    counts = context.Array("q", 2)  # chunks taken, crystals done
    workers = []
    try:
        gc.freeze()  # the forked processes' garbage collections then skip (and do not copy) our objects
        try:
            for _ in range(n_jobs - 1):
                receive, send = context.Pipe(duplex=False)
                worker = context.Process(target=_share, args=(items, groups, out, counts, send), daemon=True)
                worker.start()
                send.close()
                workers.append((worker, receive))
        finally:
            gc.unfreeze()
        _take_chunks(items, groups, out, counts, bar)
        for worker, receive in workers:
            while not receive.poll(0.1):
                bar.update(counts[1] - bar.n)
            try:
                trace = receive.recv()
                error = receive.recv() if trace is not None else None
            except EOFError:  # it ended without a word
                worker.join()
                raise RuntimeError(f"a morphometry worker process died (exit code {worker.exitcode})") from None
            except Exception:  # noqa: BLE001 - its exception pickled but cannot be rebuilt here
                raise RuntimeError(f"a morphometry worker process failed:\n{trace}") from None
            if error is not None:
                raise error from RuntimeError(f"in a morphometry worker process:\n{trace}")
    finally:
        for worker, _ in workers:
            if worker.is_alive():  # this process failed first
                worker.kill()
            worker.join()
    bar.update(counts[1] - bar.n)
    return out


def _take_chunks(items: list[tuple], groups: frozenset[str], out: np.ndarray, counts, bar: tqdm | None = None
                 ) -> None:
    """Measure the next chunk nobody has taken (`counts[0]`), until none is left."""
    while True:
        with counts.get_lock():
            start = counts[0] * PARALLEL_CHUNK
            counts[0] += 1
        if start >= len(items):
            return
        out[start:start + PARALLEL_CHUNK] = _measure_chunk(items[start:start + PARALLEL_CHUNK], groups)
        with counts.get_lock():
            counts[1] += len(out[start:start + PARALLEL_CHUNK])
        if bar is not None:
            bar.update(counts[1] - bar.n)


def _share(items: list[tuple], groups: frozenset[str], out: np.ndarray, counts, send) -> None:
    """A forked process's part of `_measure_shared`: its chunks, then None, or its traceback and
    exception."""
    try:
        with threadpool_limits(1, user_api="blas"):
            _take_chunks(items, groups, out, counts)
    except BaseException as error:  # noqa: BLE001 - reported to the caller, which raises it
        with counts.get_lock():
            counts[0] = len(items)  # the others take no more chunks
        send.send(traceback.format_exc())
        try:
            send.send(error)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            send.send(RuntimeError(repr(error)))
        return
    send.send(None)


def _measure_chunk(items: list[tuple], groups: frozenset[str], bar: tqdm | None = None) -> np.ndarray:
    """The values (`_MEASURED`) of some crystals: shape per crystal, then the outlines traced and
    the texture of all their patches measured at once."""
    measured = [_measure(mask, image, groups) for mask, image in items]
    rows = [row for row, _, _ in measured]
    smoothed = [i for i, (_, grid, _) in enumerate(measured) if grid is not None]
    for i, contour in zip(smoothed, _contours([measured[i][1] for i in smoothed])):
        rows[i].update(_outline(contour, rows[i]["diameter_equivalent_px"]))
        rows[i]["occluded_likely"] = (rows[i]["solidity"] < OCCLUSION_SOLIDITY
                                      or rows[i]["concavity_max"] > OCCLUSION_CONCAVITY)
    out = np.array([[row.get(name, math.nan) for name in _MEASURED] for row in rows], dtype=np.float64)
    sampled = [i for i, (_, _, patch) in enumerate(measured) if patch is not None]
    if sampled:
        values = texture.texture_measures(np.stack([measured[i][2][0] for i in sampled]),
                                          np.stack([measured[i][2][1] for i in sampled]))
        for name, column in values.items():
            out[sampled, _MEASURED_INDEX[name]] = column
    if bar is not None:
        bar.update(len(items))
    return out.reshape(len(items), len(_MEASURED))


def _measure(mask: np.ndarray, image: np.ndarray | None, groups: frozenset[str] = frozenset(_GROUPS)
             ) -> tuple[dict, _Grid | None, tuple[np.ndarray, np.ndarray] | None]:
    """Pixel-unit and scale-free measures of one crystal in the measurement `groups` but the
    outline ones, its smoothed grid to trace the outline on (`_outline_grid`; None without the
    outline group) and its texture patch and mask (`texture.texture_sample`; None without an image
    or texture)."""
    left, top, width, height = cv2.boundingRect(mask.view(np.uint8))  # the solid body lies in this box
    solid, outline = solid_body(mask[top:top + height, left:left + width])
    area = cv2.countNonZero(solid.view(np.uint8)) if width else 0
    if area < MIN_AREA_PX:
        return {"area_px": area}, None, None
    x, y, width, height = cv2.boundingRect(solid.view(np.uint8) if outline is None else outline)
    box, top, left = solid[y:y + height, x:x + width], top + y, left + x
    out = {"area_px": area, "diameter_equivalent_px": math.sqrt(4.0 * area / math.pi),
           "extent": area / (width * height)}
    if "ellipse" in groups:
        out.update(_ellipse(box, area))
    grid = _outline_grid(box, (top, left), mask.shape) if "outline" in groups else None
    if "feret" in groups:
        out.update(_feret(box, None if outline is None else outline - np.array([x, y], np.int32)))
    if image is None:
        return out, grid, None
    image = np.ascontiguousarray(image, dtype=np.float32)  # OpenCV reads it
    if "intensity" in groups:
        out.update(texture.intensity_features(image[top:top + height, left:left + width], box))
    if "texture" not in groups:
        return out, grid, None
    sampled = texture.texture_sample(image, box, (top, left))
    if sampled is None:
        out[_UNSAMPLED] = True
    return out, grid, sampled


def _ellipse(box: np.ndarray, area: int) -> dict[str, float]:
    """The second-moment ellipse with `regionprops`' definitions and sign conventions (axes 4
    sqrt(eigenvalue) of the inertia tensor, orientation of the major axis from the row axis), from
    OpenCV's integer image moments at a tenth of regionprops' cost. The central moments are exact
    integers (times the area), so the minor eigenvalue is the determinant over the major one,
    without cancellation, and ties of the second moments are exact, not rounding noise."""
    m = cv2.moments(box.view(np.uint8))
    m00, m10, m01 = int(m["m00"]), int(m["m10"]), int(m["m01"])
    cols = m00 * int(m["m20"]) - m10 * m10  # area^2 x the central moments (x: columns, y: rows)
    rows = m00 * int(m["m02"]) - m01 * m01
    cross = m00 * int(m["m11"]) - m10 * m01
    major = ((cols + rows) + math.sqrt((cols - rows) ** 2 + 4 * cross * cross)) / 2
    minor = min(major, max(0.0, (cols * rows - cross * cross) / major)) if major > 0 else 0.0  # rounding
    major_length, minor_length = 4.0 * math.sqrt(major) / m00, 4.0 * math.sqrt(minor) / m00
    # regionprops: 0.5 atan2(-2b, c - a) of the inertia tensor [[a, b], [b, c]] (a: columns, c: rows,
    # b = -cross); where the tensor is isotropic (a square, a disc) it gives -45 deg
    orientation = -math.pi / 4 if cols == rows and cross == 0 else 0.5 * math.atan2(2.0 * cross, rows - cols)
    return {
        "axis_major_length_px": major_length,
        "axis_minor_length_px": minor_length,
        "aspect_ratio_axes": _ratio(major_length, minor_length),
        "roundness": 4.0 * area / (math.pi * major_length ** 2),
        "eccentricity": math.sqrt(1.0 - minor / major) if major > 0 else 0.0,
        "orientation_deg": math.degrees(orientation),
    }


def _outline(contour: np.ndarray, diameter: float) -> dict[str, float]:
    """Perimeter, convexity, solidity, circularity, concavity and corners of the sub-pixel outline
    (`_contours`)."""
    steps = contour[1:] - contour[:-1]
    perimeter = float(np.sqrt((steps * steps).sum(axis=1)).sum())
    x, y = contour[:, 0], contour[:, 1]
    area = 0.5 * abs(x[:-1] @ y[1:] - x[1:] @ y[:-1])
    hull = _hull(contour[:-1])
    following = np.concatenate([hull[1:], hull[:1]])
    edges = following - hull
    lengths = np.sqrt((edges * edges).sum(axis=1))
    hull_perimeter = float(lengths.sum())
    turns = hull[:, 0] @ following[:, 1] - following[:, 0] @ hull[:, 1]  # twice the signed area
    hull_area = 0.5 * abs(turns)
    normals = (edges[:, ::-1] * (_TO_NORMAL if turns > 0 else -_TO_NORMAL)) / lengths[:, None]  # outward
    sparse = contour[:-1][::max(1, len(contour) // OUTLINE_POINTS)]
    depth = ((hull * normals).sum(axis=1) - sparse @ normals.T).min(axis=1)  # below each hull side
    out = {
        "perimeter_px": perimeter,
        "convexity": hull_perimeter / perimeter,
        "solidity": area / hull_area,
        "circularity": 4.0 * math.pi * area / perimeter ** 2,
        "concavity_max": max(0.0, float(depth.max())) / diameter,
    }
    out.update(facets.polygon_features(facets.outline_polygon(sparse, diameter)[1]))
    return out


_TO_NORMAL = np.array([1.0, -1.0])
"""(dy, dx) times this is the normal (dy, -dx) of an edge (dx, dy): outward where the polygon turns
counter-clockwise (positive signed area), as OpenCV's hull does in x, y."""


@dataclass(frozen=True)
class _Grid:
    """A crystal's smoothed mask on the grid its outline is traced on (`_outline_grid`)."""

    smooth: np.ndarray
    origin: np.ndarray
    """Crop row and column of the grid's first point."""
    step: int
    box: np.ndarray
    corner: tuple[int, int]


def _contours(grids: list[_Grid]) -> list[np.ndarray]:
    """The closed 0.5-level outline of each smoothed mask, (k, 2) row/col in its crop, first ==
    last: `find_contours`' longest contour, traced for all grids at once (`closed_contours`) where
    it is the only one. A mask too thin to survive the smoothing falls back to the raw outline."""
    out = []
    for grid, traced in zip(grids, closed_contours([grid.smooth for grid in grids], 0.5)):
        if traced is None:
            contours = find_contours(grid.smooth, 0.5)
            if not contours:
                out.append(max(find_contours(np.pad(grid.box, 1).astype(np.float32), 0.5), key=len) - 1
                           + np.array(grid.corner))
                continue
            traced = max(contours, key=len)
        out.append(traced * grid.step + grid.origin)
    return out


def _outline_grid(box: np.ndarray, corner: tuple[int, int], shape: tuple[int, int]) -> _Grid:
    """The lightly smoothed mask the outline is traced on, for the crop of `shape` whose mask is
    `box` at `corner`.

    Smoothing (Gaussian, sigma `OUTLINE_SIGMA` px) removes the pixel staircase, which would lengthen
    every slanted side by up to 8 % and make a disc look 10 % less circular than it is. Masks wider than `OUTLINE_GRID` px are traced
    on every k-th pixel of the smoothed mask (sigma k/2, so nothing aliases): tracing costs per
    outline step, and a crystal's shape needs no more than ~64 px across. Only the grid points the
    smoothed mask reaches are computed (`_gaussian_sample`).
    """
    step = max(1, -(-max(shape) // OUTLINE_GRID))
    pad = 3 * step
    sigma = max(OUTLINE_SIGMA, step / 2)
    reach = int(4.0 * sigma + 0.5) + step
    at = []  # the crop's grid rows (columns), every step-th from -pad, that lie within reach of the box
    for start, length, full in zip(corner, box.shape, shape):
        first = max(0, -(-(start - reach + pad) // step))
        last = min(-(-(full + 2 * pad) // step), -(-(start + length + reach + pad) // step))
        at.append(range(first * step - pad - start, last * step - pad - start, step))
    smooth = _gaussian_sample(box, *at, sigma).astype(np.float32)
    return _Grid(smooth, np.array([at[0][0] + corner[0], at[1][0] + corner[1]], dtype=np.float64), step, box, corner)


def _gaussian_sample(array: np.ndarray, rows: range, cols: range, sigma: float) -> np.ndarray:
    """scipy's separable Gaussian filter (radius 4 sigma) of a 2-D array with zeros beyond it (mode
    'constant'), evaluated only at the evenly spaced `rows` x `cols` (inside or beyond the array),
    float64: each pass is one product of the kernel with a strided view of the taps under the
    points, rows first, so a large crop costs a few taps per grid point instead of a full filter
    pass, and no taps are copied."""
    kernel = _gaussian_kernel(sigma)
    radius = len(kernel) // 2
    (top, height), (left, width) = ((at[0] - radius, at[-1] - at[0] + 2 * radius + 1) for at in (rows, cols))
    window = np.zeros((height, width))  # the array with its zeros, where the taps read
    inside = array[max(0, top):max(0, top + height), max(0, left):max(0, left + width)]
    window[max(0, -top):max(0, -top) + inside.shape[0], max(0, -left):max(0, -left) + inside.shape[1]] = inside
    down, across = window.strides  # views on the buffers (numpy checks that they stay inside)
    along_rows = kernel @ np.ndarray((len(rows), len(kernel), width), np.float64, window, 0,
                                     (rows.step * down, down, across))
    down, across = along_rows.strides
    return np.ndarray((len(rows), len(cols), len(kernel)), np.float64, along_rows, 0,
                      (down, cols.step * across, across)) @ kernel


@functools.lru_cache(maxsize=4096)
def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Weights of scipy's Gaussian kernel (radius 4 sigma); crops of one size share them."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma ** 2 * offsets ** 2)
    kernel /= kernel.sum()
    kernel.flags.writeable = False
    return kernel


def _feret(box: np.ndarray, outline: np.ndarray | None = None) -> dict[str, float]:
    """Feret diameters from the convex hull of the pixel corners (rotating calipers).

    Only the corners of the pixels on the convex hull of the pixel centres can be hull points (of
    the outer boundary's simple chain, OpenCV's; `outline` where `solid_body` gave it), so only
    those corners are used.
    """
    if outline is None:
        outline = np.concatenate(cv2.findContours(box.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
    pixels = cv2.convexHull(outline)[:, 0, ::-1].astype(np.float64)  # (row, col)
    corners = (pixels[:, None, :] + _PIXEL_CORNERS).reshape(-1, 2)
    hull = _hull(corners)
    edges = np.concatenate([hull[1:], hull[:1]]) - hull
    normals = (edges[:, ::-1] * -_TO_NORMAL) / np.sqrt((edges * edges).sum(axis=1))[:, None]
    projections = hull @ normals.T
    widths = projections.max(axis=0) - projections.min(axis=0)
    k = int(widths.argmin())
    along = hull @ (edges[k] / math.sqrt(edges[k] @ edges[k]))
    across, down = hull[:, 1] - hull[:, 1, None], hull[:, 0] - hull[:, 0, None]  # between every two hull points
    return {
        "feret_max_px": math.sqrt((down * down + across * across).max()),
        "feret_min_px": float(widths[k]),
        "aspect_ratio_feret": float((along.max() - along.min()) / widths[k]),
    }


_PIXEL_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


def _hull(points: np.ndarray) -> np.ndarray:
    """The convex hull's vertices of 2-D points, in order: OpenCV's, ~100x cheaper per call than
    qhull's setup; the vertices are the given float64 points themselves, so no precision is lost."""
    index = cv2.convexHull(points.astype(np.float32), clockwise=False, returnPoints=False)
    return points[index.ravel()]


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else np.nan


def _warn_unsampled(rows: list[int]) -> None:
    if rows:
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        warnings.warn(f"morphometry: {len(rows)} crystal mask(s) too thin to keep a pixel at the "
                      f"{texture.TEXTURE_SIZE} px texture size (rows {shown}); their facet and texture "
                      "columns are NaN", stacklevel=3)


def _warn_small(table: pd.DataFrame) -> None:
    small = np.flatnonzero(table["area_px"].to_numpy(dtype=float, na_value=0) < MIN_AREA_PX)
    if len(small):
        shown = ", ".join(map(str, small[:10])) + (", ..." if len(small) > 10 else "")
        warnings.warn(f"morphometry: {len(small)} crystal mask(s) with fewer than {MIN_AREA_PX} pixels "
                      f"(rows {shown}); their measurements are NaN", stacklevel=3)
