"""The paper's SEM preprocessing chain (section 4.2) as composable, optional steps.

Order as in the paper: crop the instrument's data bar, non-local-means denoising, unsharp masking
(restores the crystal edges that denoising softens), morphological opening with a 5x5 element
(removes small bright specks) and closing (fills small dark holes in facets). Noise2Void, the
paper's second denoiser, is a trained Fiji plugin and is not part of this chain.

Signal-to-noise ratio, reported before and after each step as the paper does:
SNR_dB = 20 * log10(mean(image) / sigma_noise), with sigma_noise from Immerkaer's (1996) fast noise
estimator: sigma = sqrt(pi/2) * mean|I * N| / 6 with N the 3x3 difference of Laplacians, which
cancels image structure up to second order. It needs no extra dependency (skimage's `estimate_sigma`
needs PyWavelets). On noisy images it is close to the true sigma; on clean ones edges inflate it a
little, so SNRs are conservative. Median-based (MAD) estimators were rejected: they collapse to ~0
on the flat plateaus that opening/closing create and report absurd SNRs.

Images are float 2-D arrays in [0, 1] (what `mcn.data.io.read_image` returns).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology

from mcn.segment.databar import find_data_bar

_LAPLACE_DIFF = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of additive white noise (Immerkaer's estimator, see module doc)."""
    image = np.asarray(image, np.float64)
    if image.ndim != 2 or min(image.shape) < 3:
        raise ValueError(f"noise_sigma needs a 2-D image of at least 3x3; got shape {image.shape}")
    response = ndi.convolve(image, _LAPLACE_DIFF, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.mean(np.abs(response)) / 6.0)


def snr_db(image: np.ndarray) -> float:
    """20*log10(mean / sigma_noise) in dB; inf for a noiseless image."""
    sigma = noise_sigma(image)
    mean = float(np.mean(image))
    return float("inf") if sigma == 0 else float(20.0 * np.log10(max(mean, 1e-12) / sigma))


@dataclass
class CropDataBar:
    """Cut the data bar off the bottom: `fraction` of the height if given, else detected
    (`mcn.segment.databar.find_data_bar`)."""

    fraction: float | None = None
    name: str = "crop_databar"

    def rows(self, image: np.ndarray) -> int:
        """How many bottom rows this step removes from `image`."""
        if self.fraction is not None:
            return int(round(self.fraction * image.shape[0]))
        start = find_data_bar(image)
        return 0 if start is None else image.shape[0] - start

    def __call__(self, image: np.ndarray) -> np.ndarray:
        cut = self.rows(image)
        return image[: image.shape[0] - cut] if cut else image


@dataclass
class NLMeans:
    """Edge-preserving non-local-means denoising; the filter strength is `h_factor` times the noise
    sigma estimated on the image, so one setting fits images of different noise levels.

    OpenCV's fast NLM (`cv2.fastNlMeansDenoising`: patches of `patch_size` compared within a
    `search_size` window; its cost grows with the window's area): 1.3 s for a 2048 px image where
    scikit-image's `denoise_nl_means` (fast mode, 5 px patches within 13 px) took 10-18 s on the same
    loaded 2-core machine; held to one thread, 0.5 s of CPU and 0.8-1.4 s wall at load 8-9
    (`benchmarks.segment_speed`, row `preprocess:nlm:1-thread`), inside a 3 s per-core budget. It
    reaches a similar SNR gain (9.6 -> 23.3 dB vs 27.5 dB on a synthetic scene;
    the 7 px window is the price of speed, made up in part by `h_factor` 1.2). OpenCV denoises
    8-bit images, so the image is quantised to 256 levels first; that is finer than SEM noise
    (sigma >= 1/255 in any image worth denoising) and is undone by the averaging.
    """

    h_factor: float = 1.2
    patch_size: int = 5
    search_size: int = 7
    name: str = "nlm"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        sigma = noise_sigma(image)
        if sigma == 0:
            return image
        grey = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
        out = cv2.fastNlMeansDenoising(grey, None, self.h_factor * sigma * 255, self.patch_size, self.search_size)
        return out.astype(np.float64) / 255


@dataclass
class UnsharpMask:
    """Sharpen crystal edges softened by denoising: image + amount * (image - gaussian(image))."""

    radius: float = 2.0
    amount: float = 0.7
    name: str = "unsharp"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.clip(filters.unsharp_mask(image, radius=self.radius, amount=self.amount), 0.0, 1.0)


@dataclass
class Opening:
    """Grey-level opening with a size x size square: removes bright specks smaller than it."""

    size: int = 5
    name: str = "opening"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return morphology.opening(image, morphology.footprint_rectangle((self.size, self.size)))


@dataclass
class Closing:
    """Grey-level closing with a size x size square: fills dark holes smaller than it in facets."""

    size: int = 5
    name: str = "closing"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return morphology.closing(image, morphology.footprint_rectangle((self.size, self.size)))


STEPS = {"crop_databar": CropDataBar, "nlm": NLMeans, "unsharp": UnsharpMask,
         "opening": Opening, "closing": Closing}
PAPER_STEPS = ("nlm", "unsharp", "opening", "closing")


class Preprocessor:
    """Apply preprocessing steps in order.

    steps: step objects (any callable image -> image with a `name`) or names from `STEPS` with
    default settings; default is the paper's chain without the data-bar crop.
    """

    def __init__(self, steps=PAPER_STEPS):
        self.steps = steps

    def _resolved(self) -> list:
        out = []
        for step in self.steps:
            if isinstance(step, str):
                if step not in STEPS:
                    raise ValueError(f"unknown preprocessing step {step!r}; choose from {sorted(STEPS)}")
                step = STEPS[step]()
            out.append(step)
        return out

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"preprocessing expects a 2-D grey image; got shape {image.shape}")
        return image.astype(np.float64, copy=False)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = self._check(image)
        for step in self._resolved():
            image = step(image)
        return image.astype(np.float32)

    def report(self, image: np.ndarray) -> list[tuple[str, float]]:
        """SNR in dB of the input and after each step: [("input", snr), (step name, snr), ...]."""
        image = self._check(image)
        rows = [("input", snr_db(image))]
        for step in self._resolved():
            image = step(image)
            rows.append((step.name, snr_db(image)))
        return rows
