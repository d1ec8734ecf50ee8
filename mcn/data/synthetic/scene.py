"""One synthetic micrograph: samples' traits, crystal placement, z-buffer compositing, instance masks.

A sample (one rock or one experiment) fixes the class mix, crystal size and count and the imaging
conditions; its images vary around them. Crystals are placed with best-candidate sampling (evenly
spread but overlapping, like a packed microcrystalline fabric), stacked at random depths and drawn
through a z-buffer, so the instance mask holds exactly the visible pixels of each crystal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import find_objects, label as connected

from mcn.data.synthetic import render, shapes
from mcn.data.synthetic.config import CLASSES, SHAPES, SceneConfig

PES_SHAPE_WEIGHTS = (0.35, 0.3, 0.15, 0.2)
"""How often each polyhedral habit of SHAPES["PES"] occurs."""

CONFUSION = np.array([
    [0.0, 0.8, 0.1, 0.1],
    [0.8, 0.0, 0.1, 0.1],
    [0.1, 0.1, 0.0, 0.8],
    [0.1, 0.1, 0.8, 0.0],
])
"""Where a disputed label goes (rows: true class in CLASSES order): mostly to the look-alike class."""

OVERPLACE = 1.14
"""Crystals placed per labelled crystal wanted: the rest end up hidden or as background fragments."""


@dataclass(frozen=True)
class Sample:
    """Traits shared by the images of one sample."""

    sample_id: str
    class_mix: np.ndarray
    crystals_per_image: float
    size_median_nm: float
    size_sigma: float
    imaging: render.Imaging


@dataclass
class RenderedScene:
    """A rendered micrograph, its instance mask, one row of ground truth per instance, and where
    crystals are visible but left out of the mask (`ignore`: too occluded or too small a piece)."""

    image: np.ndarray
    mask: np.ndarray
    rows: list[dict]
    ignore: np.ndarray


def draw_samples(rng: np.random.Generator, config: SceneConfig, n_samples: int, images_per_sample: np.ndarray,
                 field_nm: float, pixel_size_nm: float) -> list[Sample]:
    """Each sample's class mix, crystal count and size, and imaging conditions."""
    props = np.asarray(config.class_proportions, float) / sum(config.class_proportions)
    counts = config.crystals_per_image * np.exp(rng.normal(0, config.crystals_per_image_spread, n_samples))
    counts *= config.crystals_per_image * images_per_sample.sum() / (counts * images_per_sample).sum()
    samples = []
    for k in range(n_samples):
        mix = rng.dirichlet(props * config.class_mix_concentration * len(CLASSES) + 1e-3)
        sigma = rng.uniform(*config.size_sigma)
        coverage = rng.uniform(*config.coverage)
        mean_area = coverage * field_nm ** 2 / (counts[k] * OVERPLACE)
        median = np.sqrt(4 * mean_area / (np.pi * np.exp(2 * sigma ** 2)))
        imaging = render.Imaging(
            tilt_contrast=rng.uniform(*config.tilt_contrast),
            detector_contrast=rng.uniform(*config.detector_contrast),
            detector_azimuth=rng.uniform(0, 2 * np.pi),
            edge_brightening=rng.uniform(*config.edge_brightening),
            rim_width_px=config.rim_width_nm / pixel_size_nm,
            crystal_brightness=rng.uniform(*config.crystal_brightness),
            background_brightness=rng.uniform(*config.background_brightness),
            blur_px=rng.uniform(*config.blur_nm) / pixel_size_nm,
            electrons_per_pixel=rng.uniform(*config.electrons_per_pixel),
            read_noise=rng.uniform(*config.read_noise),
            drift=rng.uniform(*config.drift),
            charging_streaks=rng.uniform(*config.charging_streaks),
        )
        samples.append(Sample(f"sample{k:02d}", mix, float(counts[k]), float(median), sigma, imaging))
    return samples


def _jitter_imaging(rng: np.random.Generator, imaging: render.Imaging) -> render.Imaging:
    """An image's conditions: its sample's, each varied by about 15 %."""
    varied = {name: getattr(imaging, name) * float(np.exp(rng.normal(0, 0.15)))
              for name in ("tilt_contrast", "detector_contrast", "edge_brightening", "crystal_brightness",
                           "background_brightness", "blur_px", "electrons_per_pixel", "read_noise", "drift",
                           "charging_streaks")}
    return replace(imaging, detector_azimuth=imaging.detector_azimuth + rng.normal(0, 0.3), **varied)


def render_scene(rng: np.random.Generator, config: SceneConfig, sample: Sample, image_size: int,
                 pixel_size_nm: float) -> RenderedScene:
    """Render one micrograph of `sample`."""
    imaging = _jitter_imaging(rng, sample.imaging)
    median_px = sample.size_median_nm * np.exp(rng.normal(0, 0.1)) / pixel_size_nm
    n_place = max(1, int(round(sample.crystals_per_image * OVERPLACE * np.exp(rng.normal(0, 0.1)))))
    signal, zbuf = render.background(rng, image_size, 0.04 * median_px, imaging)
    ids = np.zeros((image_size, image_size), np.int32)
    diameters = median_px * np.exp(rng.normal(0, sample.size_sigma, n_place))
    centres = _place(rng, diameters, image_size)
    crystals = []
    for k in range(n_place):
        crystal = _draw_crystal(rng, config, sample.class_mix, diameters[k])
        surface = crystal.pop("surface")
        amplitude = rng.uniform(0.02, 0.07) * (1.5 if crystal["shape"] == "blob" else 1.0)
        patch = render.shade(surface, imaging, float(np.exp(rng.normal(0, 0.08))),
                             render.texture(rng, surface.inside.shape, amplitude))
        z0 = rng.uniform(0, config.depth_range) * diameters[k]
        _composite(surface, patch, z0, centres[k], k + 1, signal, zbuf, ids)
        crystal["area_px"] = int(surface.inside.sum())
        crystals.append(crystal)
    signal = render.cavity_shading(signal, zbuf, max(2.0, 0.3 * median_px))
    image = render.apply_artefacts(rng, signal, imaging)
    mask, rows = _instances(ids, crystals, config, pixel_size_nm)
    for row in rows:
        row["label"] = _noisy_label(rng, row["true_label"], config.label_noise)
    return RenderedScene(image, mask, rows, (ids > 0) & (mask == 0))


def _place(rng: np.random.Generator, diameters: np.ndarray, size: int, candidates: int = 8) -> np.ndarray:
    """Best-candidate centres: of a few random spots, take the one farthest from placed crystals."""
    centres = np.zeros((len(diameters), 2))
    for k, d in enumerate(diameters):
        options = rng.uniform(0, size, (candidates, 2))
        if k:
            gaps = np.linalg.norm(options[:, None] - centres[None, :k], axis=2) / (d + diameters[None, :k])
            options = options[[int(np.argmax(gaps.min(axis=1)))]]
        centres[k] = options[0]
    return centres


def _draw_crystal(rng: np.random.Generator, config: SceneConfig, class_mix: np.ndarray, diameter: float) -> dict:
    """A crystal's class, habit and 3-D surface."""
    cls = int(rng.choice(len(CLASSES), p=class_mix / class_mix.sum()))
    name = CLASSES[cls]
    rotation = shapes.random_rotation(rng)
    rounding = 1.0
    if name in ("RES", "PES"):
        if name == "RES":
            shape = "rhombohedron"
            faces = shapes.rhombohedron(rng)
        else:
            shape = SHAPES["PES"][rng.choice(len(SHAPES["PES"]), p=PES_SHAPE_WEIGHTS)]
            faces = (shapes.truncated_rhombohedron(rng, rng.uniform(*config.pes_truncation))
                     if shape == "truncated_rhombohedron" else getattr(shapes, shape)(rng))
        if rng.random() < config.resting_fraction:
            rotation = shapes.resting_rotation(rng, _resting_face(rng, *faces))
        rounding = rng.uniform(*config.rounding)
        surface = shapes.polyhedron_surface(*faces, diameter, rotation, rounding)
    elif name == "AA":
        shape = "blob"
        surface = shapes.blob_surface(rng, diameter, rng.uniform(*config.blob_irregularity))
    else:
        shape = "spheroid"
        surface = shapes.spheroid_surface(rng, diameter, rotation, config.spheroid_aspect,
                                          rng.uniform(*config.spheroid_roughness))
    return {"true_label": name, "shape": shape, "rounding": float(rounding), "surface": surface}


def _resting_face(rng: np.random.Generator, normals: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A face to lie on, the nearer faces (most stable, largest) more likely."""
    weights = np.exp(-4 * (d / d.min() - 1))
    return normals[rng.choice(len(d), p=weights / weights.sum())]


def _composite(surface: shapes.Surface, patch: np.ndarray, z0: float, centre: np.ndarray, index: int,
               signal: np.ndarray, zbuf: np.ndarray, ids: np.ndarray) -> None:
    """Draw a crystal into the scene where it lies above what is already there (z-buffer)."""
    size = signal.shape[0]
    r0 = int(round(centre[1])) + surface.row0
    c0 = int(round(centre[0])) + surface.col0
    h, w = surface.inside.shape
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + h, size), min(c0 + w, size)
    if rs >= re or cs >= ce:
        return
    local = (slice(rs - r0, re - r0), slice(cs - c0, ce - c0))
    region = (slice(rs, re), slice(cs, ce))
    z = surface.z[local] + z0
    visible = surface.inside[local] & (z > zbuf[region])
    zbuf[region] = np.where(visible, z, zbuf[region])
    signal[region] = np.where(visible, patch[local], signal[region])
    ids[region] = np.where(visible, index, ids[region])


def _instances(ids: np.ndarray, crystals: list[dict], config: SceneConfig, pixel_size_nm: float
               ) -> tuple[np.ndarray, list[dict]]:
    """Keep each crystal's largest visible piece; merge hidden crystals and fragments into background."""
    size = ids.shape[0]
    mask = np.zeros(ids.shape, np.uint16)
    min_px = config.min_visible_area_nm2 / pixel_size_nm ** 2
    rows = []
    for k, box in enumerate(find_objects(ids, max_label=len(crystals))):
        if box is None:
            continue
        pieces, n = connected(ids[box] == k + 1)
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
        largest = pieces == int(np.argmax(sizes)) + 1
        visible = int(sizes.max())
        full = crystals[k]["area_px"]
        if visible < min_px or visible / full < config.min_visible_fraction:
            continue
        instance = len(rows) + 1
        mask[box][largest] = instance
        rr, cc = np.nonzero(largest)
        touches = (rr.min() + box[0].start == 0 or cc.min() + box[1].start == 0
                   or rr.max() + box[0].start == size - 1 or cc.max() + box[1].start == size - 1)
        area_nm2 = full * pixel_size_nm ** 2
        rows.append({
            "instance_id": instance,
            "true_label": crystals[k]["true_label"],
            "shape": crystals[k]["shape"],
            "rounding": round(crystals[k]["rounding"], 4),
            "visible_fraction": round(min(1.0, visible / full), 4),
            "equivalent_diameter_nm": round(float(np.sqrt(4 * area_nm2 / np.pi)), 1),
            "area_nm2": round(float(area_nm2), 1),
            "touches_border": bool(touches),
        })
    return mask, rows


def _noisy_label(rng: np.random.Generator, true_label: str, rate: float) -> str:
    """The expert's label: the truth, or with probability `rate` a look-alike class."""
    k = CLASSES.index(true_label)
    if rng.random() >= rate:
        return true_label
    return CLASSES[int(rng.choice(len(CLASSES), p=CONFUSION[k]))]
