"""Segment Anything (the `segment-anything` package) over whole SEM images, tiled.

SAM sees 1024x1024 inputs; a 2048x2048 micrograph shrunk to that loses the small crystals, so the
image is cut into `tile_size` tiles overlapping by `overlap` pixels, each tile runs through
`SamAutomaticMaskGenerator` at native resolution, and masks are merged in image coordinates:
a mask touching a tile edge that lies inside the image is truncated there and is dropped (the tile
next to it sees that crystal whole, as long as `overlap` exceeds the largest crystal's diameter);
duplicates from overlapping tiles and nested masks are resolved by `masks_to_labels` (smaller mask
wins by default). Weights are never downloaded: the user gives a checkpoint file (the official
ViT-B/L/H files, or one written by `mcn.segment.finetune`) or an already built `Sam` model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from segment_anything.modeling import Sam

from mcn.errors import DataError
from mcn.segment.postprocess import MaskCandidate, masks_to_labels


def load_sam(checkpoint: str | Path | Sam, model_type: str = "vit_b") -> Sam:
    """A SAM model from a checkpoint file (state dict of `sam_model_registry[model_type]`), or the
    model itself when one is given; errors name the file and the problem in one line."""
    if isinstance(checkpoint, Sam):
        return checkpoint
    if model_type not in sam_model_registry:
        raise ValueError(f"model_type must be one of {sorted(sam_model_registry)}; got {model_type!r}")
    path = Path(checkpoint)
    if not path.is_file():
        raise DataError(f"{path}: SAM checkpoint not found (download it yourself; nothing is fetched)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from exc
    model = sam_model_registry[model_type]()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: weights do not fit SAM model_type {model_type!r}") from exc
    return model.eval()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The given device, else the GPU when torch sees one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """SAM's input format (HxWx3 uint8) from a grey image in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"SAM segmentation expects a 2-D grey image; got shape {image.shape}")
    grey = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` overlap;
    the last tile is aligned to the end, so no tile is padded."""
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile_size); got {overlap} with tile_size {tile}")
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_boxes(shape: tuple[int, int], tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(row0, col0, row1, col1) of every tile of an image of `shape`."""
    h, w = shape
    return [(r, c, min(r + tile, h), min(c + tile, w))
            for r in tile_starts(h, tile, overlap) for c in tile_starts(w, tile, overlap)]


def _cut_by_tile(cand: MaskCandidate, box: tuple[int, int, int, int], shape: tuple[int, int],
                 margin: int) -> bool:
    """The candidate touches an edge of its tile that is not an edge of the image."""
    r0, c0, r1, c1 = box
    mr0, mc0 = cand.row0, cand.col0
    mr1, mc1 = mr0 + cand.mask.shape[0], mc0 + cand.mask.shape[1]
    return ((r0 > 0 and mr0 - r0 <= margin) or (c0 > 0 and mc0 - c0 <= margin)
            or (r1 < shape[0] and r1 - mr1 <= margin) or (c1 < shape[1] and c1 - mc1 <= margin))


class _Bf16Predictor(SamPredictor):
    """Runs the image encoder (nearly all of SAM's arithmetic) under bf16 autocast and hands float32
    features on, so prompt decoding and the mask generator's numpy conversions stay float32."""

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            super().set_torch_image(transformed_image, original_image_size)
        self.features = self.features.float()


class SamSegmenter:
    """Instance segmentation of grey SEM images with SAM's automatic mask generator, tiled.

    checkpoint: path to a SAM state dict, or a built `Sam` model (moved to `device`).
    model_type: "vit_b", "vit_l" or "vit_h" (must match the checkpoint).
    tile_size / overlap: tiling in pixels; images no larger than a tile run whole.
    points_per_side: prompt grid per tile (SAM's default 32).
    min_area / max_area: mask area limits in pixels; max_area None means a quarter of a tile (of
        the image when smaller): larger masks are the matrix or clumps.
    priority: overlap rule, "area" (smaller wins) or "score" (higher predicted IoU wins).
    precision: "fp32" or "bf16" (the image encoder under bf16 autocast; for GPUs).
    generator_kwargs: passed to `SamAutomaticMaskGenerator` (pred_iou_thresh, stability_score_thresh,
        points_per_batch, box_nms_thresh, ...).
    """

    def __init__(self, checkpoint: str | Path | Sam, model_type: str = "vit_b", tile_size: int = 1024,
                 overlap: int = 256, points_per_side: int = 32, device: str | None = None,
                 min_area: int = 30, max_area: int | None = None, priority: str = "area",
                 precision: str = "fp32", **generator_kwargs):
        self.checkpoint = checkpoint
        self.model_type = model_type
        self.tile_size = tile_size
        self.overlap = overlap
        self.points_per_side = points_per_side
        self.device = device
        self.min_area = min_area
        self.max_area = max_area
        self.priority = priority
        self.precision = precision
        self.generator_kwargs = generator_kwargs

    def _generator(self) -> SamAutomaticMaskGenerator:
        if not hasattr(self, "generator_"):
            if self.precision not in ("fp32", "bf16"):
                raise ValueError(f"precision must be 'fp32' or 'bf16'; got {self.precision!r}")
            self.device_ = resolve_device(self.device)
            self.model_ = load_sam(self.checkpoint, self.model_type).to(self.device_).eval()
            self.generator_ = SamAutomaticMaskGenerator(
                self.model_, points_per_side=self.points_per_side, output_mode="binary_mask",
                **self.generator_kwargs)
            if self.precision == "bf16":
                self.generator_.predictor = _Bf16Predictor(self.model_)
        return self.generator_

    def masks(self, image: np.ndarray) -> list[MaskCandidate]:
        """Every mask SAM proposes over the image, in image coordinates, tile-cut ones dropped."""
        rgb = to_rgb_uint8(image)
        generator = self._generator()
        boxes = tile_boxes(rgb.shape[:2], self.tile_size, self.overlap)
        out = []
        for box in boxes:
            r0, c0, r1, c1 = box
            with torch.inference_mode():
                records = generator.generate(rgb[r0:r1, c0:c1])
            for rec in records:
                cand = MaskCandidate.from_full(rec["segmentation"], rec["predicted_iou"], r0, c0)
                if cand is not None and not (len(boxes) > 1
                                             and _cut_by_tile(cand, box, rgb.shape[:2], margin=1)):
                    out.append(cand)
        return out

    def segment(self, image: np.ndarray) -> np.ndarray:
        """uint16 instance labels (0 = matrix) of a 2-D grey image in [0, 1]."""
        candidates = self.masks(image)
        h, w = np.shape(image)
        max_area = self.max_area
        if max_area is None:
            max_area = min(h, self.tile_size) * min(w, self.tile_size) // 4
        return masks_to_labels(candidates, (h, w), self.min_area, max_area, self.priority)
