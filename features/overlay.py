"""Overlay of exported crystals on their SEM image, to check segmentation and classes by eye.

Drawn with Pillow at the image's own resolution, so outlines stay pixel-exact, and fast (under a
second for 1536 x 1024 here; matplotlib's figure path took 3-5 s). Header lines above the image hold
the title and, when classified, the colour legend.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

UNCLASSIFIED_COLOUR = (255, 217, 0)
LINE_PX = 24


def class_colours(class_names: tuple[str, ...] | list[str]) -> dict[str, tuple[int, int, int]]:
    """A fixed tab10 colour per class, in class order."""
    cmap = colormaps["tab10"]
    return {c: tuple(int(255 * v) for v in cmap(i % 10)[:3]) for i, c in enumerate(class_names)}


def save_overlay(path: str, image: np.ndarray, labels: np.ndarray,
                 instance_classes: dict[int, str] | None = None,
                 class_names: tuple[str, ...] | list[str] = (), title: str = "") -> None:
    """Write a PNG of `image` (2-D, [0, 1]) with each instance of `labels` outlined.

    `instance_classes` maps instance id -> class name (one of `class_names`, which fixes colours and
    legend order); without it every outline has one colour.
    """
    grey = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    outlines = find_boundaries(labels, mode="inner") & (labels > 0)
    if min(labels.shape) >= 1000:  # a one-pixel line vanishes when a large image is viewed whole
        outlines = ndi.binary_dilation(outlines) & (labels > 0)
    colours = class_colours(class_names)
    lut = np.tile(np.array(UNCLASSIFIED_COLOUR, np.uint8), (int(labels.max()) + 1, 1))
    for instance, name in (instance_classes or {}).items():
        lut[instance] = colours[name]
    rgb[outlines] = lut[labels[outlines]]
    font = ImageFont.load_default(size=14)
    legend = colours if instance_classes else {}
    rows = _legend_rows(font, title, legend, rgb.shape[1])
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + LINE_PX * len(rows)), "white")
    canvas.paste(Image.fromarray(rgb), (0, LINE_PX * len(rows)))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill="black", font=font)
    for row, entries in enumerate(rows):
        for x, name in entries:
            y = row * LINE_PX
            draw.rectangle((x, y + 6, x + 12, y + 18), fill=legend[name], outline="black")
            draw.text((x + 16, y + 4), name, fill="black", font=font)
    canvas.save(path, compress_level=1)  # SEM noise compresses poorly: favour speed


def _legend_rows(font: ImageFont.FreeTypeFont, title: str, legend: dict, width: int
                 ) -> list[list[tuple[float, str]]]:
    """Legend entries (x, class) per header line: after the title, wrapped to the image width."""
    rows: list[list[tuple[float, str]]] = [[]]
    x = 4 + font.getlength(title) + 16
    for name in legend:
        step = 16 + font.getlength(name) + 14
        if x + step > width and x > 8:  # does not fit, and the line already holds something
            rows.append([])
            x = 8
        rows[-1].append((x, name))
        x += step
    return rows
