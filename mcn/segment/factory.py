"""One way to build any segmenter by name, for every command that segments whole images
(`mcn.segment.evaluate`, `features.export`): `make_segmenter("classical", pixel_size_nm=10.0)`.

A builder takes keyword arguments, always including `pixel_size_nm` (NaN when unknown; a builder
that works in pixels ignores it), and returns an object with `segment(image) -> uint16 labels`.
A new segmenter registers its builder with `@register("name")` in this module; an unknown name
fails with one line listing the names that exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from mcn.errors import DataError
from mcn.segment.classical import ClassicalSegmenter

SEGMENTERS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make a builder available to `make_segmenter` under `name`."""
    def add(builder: Callable) -> Callable:
        SEGMENTERS[name] = builder
        return builder
    return add


def make_segmenter(name: str, **kwargs):
    """The segmenter `name` built from `kwargs` (see each builder)."""
    if name not in SEGMENTERS:
        raise DataError(f"unknown segmenter {name!r}; choose from {', '.join(sorted(SEGMENTERS))}")
    return SEGMENTERS[name](**kwargs)


@register("classical")
def _classical(pixel_size_nm: float = math.nan, crystal_size_nm: tuple[float, float] | None = None,
               preprocessor=None, **params) -> ClassicalSegmenter:
    """`ClassicalSegmenter.for_pixel_size`: sizes from the pixel size and crystal size range where
    both are known, else estimated on each image."""
    return ClassicalSegmenter.for_pixel_size(pixel_size_nm, crystal_size_nm, preprocessor=preprocessor,
                                             **params)


@register("sam")
def _sam(checkpoint: str | None = None, model_type: str = "vit_b", preprocessor=None,
         pixel_size_nm: float = math.nan, **params):
    """Segment Anything from a user's checkpoint (never downloaded); the preprocessor runs first."""
    if not checkpoint:
        raise DataError("--segmenter sam needs --sam-checkpoint PATH")
    if not Path(checkpoint).is_file():  # fail before importing torch and segment-anything
        raise DataError(f"{checkpoint}: SAM checkpoint not found (weights are never downloaded)")
    from mcn.segment.sam import SamSegmenter, load_sam

    segmenter = SamSegmenter(load_sam(checkpoint, model_type), model_type, **params)  # bad weights fail here
    return segmenter if preprocessor is None else Preprocessed(segmenter, preprocessor)


@register("learned")
def _learned(model: str | Path | None = None, preprocessor=None, pixel_size_nm: float = math.nan, **params):
    """A `LearnedSegmenter` fitted by `python -m mcn.segment.train` (a skops file of trusted types)."""
    if not model:
        raise DataError("--segmenter learned needs --segmenter-model FILE (python -m mcn.segment.train writes one)")
    from mcn.segment.learned import LearnedSegmenter

    segmenter = LearnedSegmenter.load(model)
    return segmenter if preprocessor is None else Preprocessed(segmenter, preprocessor)


class Preprocessed:
    """A segmenter that sees the image after `preprocessor` (for segmenters without that option)."""

    def __init__(self, segmenter, preprocessor):
        self.segmenter = segmenter
        self.preprocessor = preprocessor

    def segment(self, image):
        return self.segmenter.segment(self.preprocessor(image))
