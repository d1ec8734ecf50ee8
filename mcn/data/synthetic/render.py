"""Secondary-electron image formation: surface shading, the rough matrix, and the instrument's flaws.

Signal model (per pixel, before artefacts): a base yield times an albedo, plus
- the tilt effect: secondary-electron yield rises with surface tilt, roughly 1/cos(tilt);
- the detector term: the Everhart-Thornley detector sits to one side, so faces turned to it are
  brighter (the shadowed look of SEM relief);
- the edge effect: electrons escape from both sides of thin edges, so facet edges and crystal rims
  glow;
- a cavity term: pores and the feet of crystals lose electrons to their surroundings and look dark.
Then beam blur, brightness drift, shot (Poisson) and detector (Gaussian) noise, and charging streaks
along the scan lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

from mcn.data.synthetic.shapes import Surface


@dataclass(frozen=True)
class Imaging:
    """The imaging conditions of one micrograph (drawn per sample, jittered per image)."""

    tilt_contrast: float
    detector_contrast: float
    detector_azimuth: float
    edge_brightening: float
    rim_width_px: float
    crystal_brightness: float
    background_brightness: float
    blur_px: float
    electrons_per_pixel: float
    read_noise: float
    drift: float
    charging_streaks: float


def shade(surface: Surface, imaging: Imaging, albedo: float, texture: np.ndarray) -> np.ndarray:
    """Secondary-electron signal of one crystal's visible surface (before artefacts)."""
    sec = np.sqrt(1 + surface.gx ** 2 + surface.gy ** 2)
    rim = _rim(surface.inside, imaging.rim_width_px)
    signal = (imaging.crystal_brightness
              + imaging.tilt_contrast * imaging.crystal_brightness * np.minimum(sec - 1, 2.5)
              + _detector(surface.gx, surface.gy, sec, imaging)
              + imaging.edge_brightening * (1.6 * surface.ridge + 0.6 * rim))
    return albedo * signal * (1 + texture)


def _rim(inside: np.ndarray, width_px: float) -> np.ndarray:
    """1 on the outline, falling to 0 about `width_px` inside (a box filter: cheap at any width)."""
    size = 2 * int(round(width_px)) + 1
    covered = uniform_filter(inside.astype(np.float32), size, mode="constant")
    return np.where(inside, np.clip(2 * (1 - covered), 0, 1), 0.0)


def _detector(gx: np.ndarray, gy: np.ndarray, sec: np.ndarray, imaging: Imaging) -> np.ndarray:
    """Directional term: the surface normal's component towards the side detector (elevated 35 deg)."""
    az, el = imaging.detector_azimuth, np.deg2rad(35)
    towards = (-gx * np.cos(az) * np.cos(el) - gy * np.sin(az) * np.cos(el) + np.sin(el)) / sec
    return imaging.detector_contrast * (towards - np.sin(el))


def background(rng: np.random.Generator, size: int, relief_px: float, imaging: Imaging
               ) -> tuple[np.ndarray, np.ndarray]:
    """A rough matrix of fine, unresolved grains: (signal, height) of the scene's floor."""
    height = _fractal(rng, size, beta=3.2) * relief_px + gaussian_filter(rng.normal(size=(size, size)), 1.5) * 1.5
    gy, gx = np.gradient(height)
    sec = np.sqrt(1 + gx ** 2 + gy ** 2)
    signal = imaging.background_brightness * (1 + 1.2 * imaging.tilt_contrast * np.minimum(sec - 1, 2.5)) \
        + 0.6 * _detector(gx, gy, sec, imaging)
    return signal, height - relief_px * 3


def _fractal(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with a 1/f^beta power spectrum (rough natural surfaces)."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.rfftfreq(size), indexing="ij"))
    spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / np.maximum(f, 1 / size) ** (beta / 2)
    field = np.fft.irfft2(spectrum, s=(size, size))
    return (field - field.mean()) / field.std()


def texture(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """Fine surface roughness of a crystal face (multiplicative)."""
    return gaussian_filter(rng.normal(size=shape), 1.2) * amplitude * 2.5


def cavity_shading(signal: np.ndarray, height: np.ndarray, scale_px: float) -> np.ndarray:
    """Darken what lies below its surroundings (pores, crystal feet), brighten what stands proud."""
    size = int(2 * scale_px) | 1
    relief = (height - uniform_filter(uniform_filter(height, size), size)) / scale_px
    return signal * (1 + 0.45 * np.tanh(relief))


def apply_artefacts(rng: np.random.Generator, signal: np.ndarray, imaging: Imaging) -> np.ndarray:
    """Beam blur, brightness drift, shot and detector noise, charging streaks -> 8-bit grey."""
    size = signal.shape[0]
    img = gaussian_filter(signal, imaging.blur_px)
    u = np.linspace(-1, 1, size)
    coef = rng.normal(0, 1, 4)
    drift = coef[0] * u[None, :] + coef[1] * u[:, None] + coef[2] * np.outer(u, u) + coef[3] * (u[:, None] ** 2)
    img = img * (1 + imaging.drift * drift / 2)
    counts = imaging.electrons_per_pixel
    img = rng.poisson(np.clip(img, 0, None) * counts) / counts
    img = img + rng.normal(0, imaging.read_noise, img.shape)
    img = _charging(rng, img, imaging.charging_streaks)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _charging(rng: np.random.Generator, img: np.ndarray, mean_streaks: float) -> np.ndarray:
    """Horizontal streaks: charge builds up on a scan line and decays along it (to the right)."""
    size = img.shape[0]
    x = np.arange(size)
    for _ in range(rng.poisson(mean_streaks)):
        row, start = rng.integers(0, size, 2)
        rows = slice(row, min(size, row + int(rng.integers(1, 5))))
        decay = np.where(x >= start, np.exp(-(x - start) / rng.uniform(0.05, 0.5) / size), 0.0)
        img[rows] += rng.uniform(0.08, 0.35) * decay
    return img
