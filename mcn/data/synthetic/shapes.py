"""3-D crystal habits, rendered as height fields seen from above (orthographic, z towards the beam).

Faceted habits are convex polyhedra written as half-spaces {p : n_i . p <= d_i}. Seen from above,
a pixel (x, y) is inside when the lowest upper face lies above the highest lower face; the upper
face that wins gives the surface normal. Replacing that minimum by a smooth minimum (log-sum-exp
with a temperature set by the rounding) rounds edges and corners: euhedral at 0, subhedral above.
Anhedral habits are height fields directly: lumpy blobs (AA) and rough ellipsoids (RA).

Every habit is scaled so that its mean projected area over random orientations equals that of a
disc of the requested diameter, so size carries no information about the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

CALCITE_RHOMB_POLAR = np.deg2rad(44.6)
"""Angle between the c axis and the normal of a calcite cleavage rhombohedron {10-14} face."""

MAX_SLOPE = 6.0
"""Steepest surface slope kept (about 80 degrees); steeper is the outline itself."""


@dataclass
class Surface:
    """A crystal's top surface on a pixel patch centred on the crystal.

    inside: pixels covered by the crystal's projection.
    z: height of the top surface (pixels, towards the beam) relative to the crystal's centre.
    gx, gy: surface slopes dz/dx (columns) and dz/dy (rows).
    ridge: 0 on smooth faces, up to ~0.5 on facet edges (where two faces meet).
    row0, col0: offset of the patch's top-left pixel from the crystal's centre pixel.
    """

    inside: np.ndarray
    z: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    ridge: np.ndarray
    row0: int
    col0: int


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3-D rotation matrix (from a random unit quaternion)."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def resting_rotation(rng: np.random.Generator, face_normal: np.ndarray, tilt_deg: float = 12.0) -> np.ndarray:
    """A rotation that lays a crystal on the face with `face_normal` (turned to -z, the substrate),
    slightly tilted, at a random azimuth: how grains settle on a mount or a fracture surface."""
    n = face_normal / np.linalg.norm(face_normal)
    down = np.array([0.0, 0.0, -1.0])
    axis = np.cross(n, down)
    sin, cos = np.linalg.norm(axis), float(n @ down)
    if sin < 1e-9:
        align = np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    else:
        k = axis / sin
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        align = np.eye(3) + sin * kx + (1 - cos) * kx @ kx
    tilt, spin = np.deg2rad(rng.normal(0, tilt_deg)), rng.uniform(0, 2 * np.pi)
    tilt_x = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    spin_z = np.array([[np.cos(spin), -np.sin(spin), 0], [np.sin(spin), np.cos(spin), 0], [0, 0, 1]])
    return spin_z @ tilt_x @ align


def _polar(polar: float, azimuth_deg: np.ndarray) -> np.ndarray:
    az = np.deg2rad(np.asarray(azimuth_deg, float))
    return np.stack([np.sin(polar) * np.cos(az), np.sin(polar) * np.sin(az),
                     np.full(az.shape, np.cos(polar))], axis=1)


def _mirror(normals: np.ndarray, rotate_deg: float = 60.0) -> np.ndarray:
    """The lower faces of a trigonal habit: turned by 60 degrees about c and pointing down."""
    a = np.deg2rad(rotate_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, -1]])
    return normals @ rot.T


def rhombohedron(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Calcite rhomb: 6 faces, slightly distorted (face pairs at slightly different distances)."""
    polar = CALCITE_RHOMB_POLAR + rng.uniform(-0.08, 0.12)
    up = _polar(polar, [0, 120, 240])
    normals = np.vstack([up, -up])
    d = np.tile(1 + rng.normal(0, 0.08, 3), 2)
    return normals, d


def scalenohedron(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dog-tooth calcite {21-31}: 12 steep faces in pairs around each trigonal direction."""
    polar = np.deg2rad(rng.uniform(64, 76))
    delta = rng.uniform(12, 24)
    az = np.array([a + s * delta for a in (0, 120, 240) for s in (-1, 1)])
    up = _polar(polar, az)
    normals = np.vstack([up, _mirror(up)])
    return normals, np.ones(12) + rng.normal(0, 0.04, 12)


def prism(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hexagonal prism {10-10} terminated by rhomb faces at both ends: 12 faces."""
    sides = _polar(np.pi / 2, np.arange(30, 360, 60))
    up = _polar(CALCITE_RHOMB_POLAR, [0, 120, 240])
    apex = rng.uniform(2.2, 4.0)
    normals = np.vstack([sides, up, _mirror(up)])
    d = np.concatenate([np.ones(6) + rng.normal(0, 0.05, 6), np.full(6, apex * np.cos(CALCITE_RHOMB_POLAR))])
    return normals, d


def tabular(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hexagonal plate: prism sides, basal pinacoid and bevelling rhomb faces: 14 faces."""
    sides = _polar(np.pi / 2, np.arange(30, 360, 60))
    pinacoid = np.array([[0, 0, 1.0], [0, 0, -1.0]])
    up = _polar(CALCITE_RHOMB_POLAR, [0, 120, 240])
    t = rng.uniform(0.25, 0.5)
    bevel = rng.uniform(0.8, 0.92) * (np.sin(CALCITE_RHOMB_POLAR) + t * np.cos(CALCITE_RHOMB_POLAR))
    normals = np.vstack([sides, pinacoid, up, _mirror(up)])
    d = np.concatenate([np.ones(6) + rng.normal(0, 0.05, 6), [t, t], np.full(6, bevel)])
    return normals, d


def truncated_rhombohedron(rng: np.random.Generator, truncation: float) -> tuple[np.ndarray, np.ndarray]:
    """Rhomb whose apices and lateral corners are cut by pinacoid and prism faces: 14 faces.

    Small `truncation` leaves tiny extra facets, so such crystals look almost rhombic (a realistic
    RES/PES confusion)."""
    normals, d = rhombohedron(rng)
    extra = np.vstack([[[0, 0, 1.0], [0, 0, -1.0]], _polar(np.pi / 2, np.arange(0, 360, 60) + 30)])
    support = (_vertices(normals, d) @ extra.T).max(axis=0)
    cut = support * (1 - truncation * rng.uniform(0.5, 1.0, len(extra)))
    return np.vstack([normals, extra]), np.concatenate([d, cut])


def _vertices(normals: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Corners of the polyhedron {n_i . p <= d_i}: feasible intersections of three planes."""
    idx = np.array([(i, j, k) for i in range(len(d)) for j in range(i + 1, len(d))
                    for k in range(j + 1, len(d))])
    a = normals[idx]
    ok = np.abs(np.linalg.det(a)) > 1e-9
    points = np.linalg.solve(a[ok], d[idx[ok]][..., None])[..., 0]
    feasible = (points @ normals.T <= d + 1e-7).all(axis=1)
    return points[feasible]


def polyhedron_surface(normals: np.ndarray, d: np.ndarray, diameter_px: float, rotation: np.ndarray,
                       rounding: float) -> Surface:
    """Render a convex polyhedron seen from above after `rotation`, scaled to `diameter_px`.

    rounding: edge rounding as a fraction of the diameter (smooth-min temperature)."""
    hull = ConvexHull(_vertices(normals, d))
    scale = diameter_px / np.sqrt(hull.area / np.pi)  # mean projected area = area / 4 (Cauchy)
    normals = normals @ rotation.T
    d = d * scale
    verts = hull.points[hull.vertices] @ rotation.T * scale
    row0, col0 = int(np.floor(verts[:, 1].min())) - 1, int(np.floor(verts[:, 0].min())) - 1
    rows = np.arange(row0, int(np.ceil(verts[:, 1].max())) + 2)
    cols = np.arange(col0, int(np.ceil(verts[:, 0].max())) + 2)
    y, x = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
    temperature = max(0.35, rounding * diameter_px / 4)
    nz = normals[:, 2]
    top, bottom = nz > 1e-3, nz < -1e-3
    plane = (d[:, None, None] - normals[:, 0, None, None] * x - normals[:, 1, None, None] * y)
    inside = np.ones(x.shape, bool)
    for i in np.flatnonzero(~top & ~bottom):
        inside &= plane[i] >= 0
    t_top = plane[top] / nz[top, None, None]
    z, weights = _smooth_min(t_top, temperature)
    z_bottom, _ = _smooth_min(-plane[bottom] / nz[bottom, None, None], temperature)
    inside &= z >= -z_bottom
    gx = np.einsum("k...,k->...", weights, -normals[top, 0] / nz[top])
    gy = np.einsum("k...,k->...", weights, -normals[top, 1] / nz[top])
    ridge = 1 - weights.max(axis=0)
    return _finish(inside, z, gx, gy, ridge, row0, col0)


def _smooth_min(values: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-sum-exp minimum over axis 0 and its softmax weights (the gradient of the minimum)."""
    low = values.min(axis=0)
    e = np.exp(-(values - low) / temperature)
    total = e.sum(axis=0)
    return low - temperature * np.log(total), e / total


def blob_surface(rng: np.random.Generator, diameter_px: float, irregularity: float) -> Surface:
    """Amorphous (AA) crystal: a lumpy, facet-less body, sometimes a clump of two or three lobes."""
    lobes = [(0.0, 0.0, 1.0)]
    for _ in range(rng.choice(3, p=[0.6, 0.3, 0.1])):
        angle = rng.uniform(0, 2 * np.pi)
        lobes.append((0.55 * np.cos(angle), 0.55 * np.sin(angle), rng.uniform(0.45, 0.7)))
    orders = np.arange(2, 7)
    harmonics = [rng.normal(0, irregularity, 5) / orders ** 1.2 * np.exp(1j * rng.uniform(0, 2 * np.pi, 5))
                 for _ in lobes]
    area = sum(s * s * (1 + 0.5 * np.sum(np.abs(a) ** 2)) for (_, _, s), a in zip(lobes, harmonics))
    radius = diameter_px / 2 / np.sqrt(area * 0.8)
    half = int(np.ceil(radius * 1.9)) + 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    z = np.full(x.shape, -np.inf)
    for (cx, cy, s), amp in zip(lobes, harmonics):
        dx, dy = x - cx * radius, y - cy * radius
        dist = np.hypot(dx, dy)
        unit = (dx + 1j * dy) / np.maximum(dist, 1e-9)
        wave, power = np.zeros(x.shape), unit * unit
        for a in amp:  # sum of a_k * e^{i k phi}, orders 2..6, real part
            wave += (a * power).real
            power = power * unit
        rho = dist / np.maximum(s * radius * (1 + wave), 1e-6)
        height = s * radius * rng.uniform(0.55, 0.9) * np.sqrt(np.clip(1 - rho ** 2, 0, None))
        z = np.maximum(z, np.where(rho < 1, height, -np.inf))
    inside = np.isfinite(z)
    bumps = smooth_noise(rng, x.shape, radius / 1.5) * radius * irregularity * 0.5
    z = np.where(inside, z + bumps * np.clip(z / radius, 0, 1), 0.0)
    return _height_field(inside, z, -half, -half)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float, waves: int = 8) -> np.ndarray:
    """A smooth, roughly unit-variance random relief with features about `scale_px` wide.

    A sum of a few plane waves in random directions: cheap at any scale, unlike filtering noise."""
    y, x = np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float)
    angles = rng.uniform(0, np.pi, waves)
    k = 2 * np.pi / (max(float(scale_px), 1.0) * rng.uniform(1.0, 2.5, waves))
    phases = rng.uniform(0, 2 * np.pi, waves)
    field = np.zeros(shape)
    for a, kk, ph in zip(angles, k, phases):  # cos(u + v) = cos u cos v - sin u sin v: outer products
        u, v = kk * np.cos(a) * x, kk * np.sin(a) * y + ph
        field += np.outer(np.cos(v), np.cos(u)) - np.outer(np.sin(v), np.sin(u))
    return field * np.sqrt(2 / waves)


def spheroid_surface(rng: np.random.Generator, diameter_px: float, rotation: np.ndarray,
                     aspect: tuple[float, float], roughness: float) -> Surface:
    """Rounded (RA) crystal: a randomly oriented ellipsoid with a slightly rough skin."""
    axes = np.array([1.0, rng.uniform(*aspect), rng.uniform(*aspect)])
    mean_proj = (axes[0] * axes[1] + axes[1] * axes[2] + axes[0] * axes[2]) / 3
    axes *= diameter_px / 2 / np.sqrt(mean_proj)
    m = rotation @ np.diag(1 / axes ** 2) @ rotation.T
    half = int(np.ceil(axes.max())) + 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    b = m[0, 2] * x + m[1, 2] * y
    c = m[0, 0] * x * x + 2 * m[0, 1] * x * y + m[1, 1] * y * y - 1
    disc = b * b - m[2, 2] * c
    inside = disc > 0
    z = np.where(inside, (-b + np.sqrt(np.clip(disc, 0, None))) / m[2, 2], 0.0)
    skin = smooth_noise(rng, x.shape, max(2.0, axes.min() / 2)) * axes.min() * roughness
    return _height_field(inside, z + np.where(inside, skin, 0.0), -half, -half)


def _height_field(inside: np.ndarray, z: np.ndarray, row0: int, col0: int) -> Surface:
    gy, gx = np.gradient(z)
    return _finish(inside, z, gx, gy, np.zeros(z.shape), row0, col0)


def _finish(inside, z, gx, gy, ridge, row0, col0) -> Surface:
    """Clip slopes, zero everything outside, crop the patch to the crystal."""
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if len(rows) == 0:
        rows = cols = np.array([0])
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    slope = np.hypot(gx, gy)
    factor = np.where(slope > MAX_SLOPE, MAX_SLOPE / np.maximum(slope, 1e-9), 1.0)
    keep = inside[crop]
    return Surface(keep, np.where(keep, z[crop], 0.0), np.where(keep, (gx * factor)[crop], 0.0),
                   np.where(keep, (gy * factor)[crop], 0.0), np.where(keep, ridge[crop], 0.0),
                   row0 + int(rows[0]), col0 + int(cols[0]))
