"""SEM image I/O: grey images in [0, 1], instance masks, and the pixel size an instrument recorded.

Pixel size turns pixel counts into micrometres, so it is read from the instrument's own TIFF
metadata where present and the source is recorded next to the value:
- "zeiss": the `CZ_SEM` tag (34118), key `ap_image_pixel_size`. Zeiss also writes `ap_pixel_size`,
  which is a monitor value and is never used.
- "fei": the FEI/Thermo tags (34680 SFEG, 34682 Helios), `[Scan] PixelWidth` in metres.
- "tiff": what `write_image` records (an ImageDescription JSON and resolution tags in centimetres),
  resolution tags in centimetres written by other tools, or an ImageJ calibration.
- "unknown": NaN.
Resolution tags in inches are ignored: 72/96/300 dpi are screen and print defaults, not a scale.

The same vendor tags record the height of the micrograph without the data bar the instrument writes
under it (`read_content_rows`), and images above a pixel budget are refused before they are decoded
(`MAX_IMAGE_PIXELS`): a 20000 x 20000 TIFF took 4.9 GB just to read and then failed to segment.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from mcn.errors import DataError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
_GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # ITU-R 709, as skimage
_LENGTH_IN_NM = {"pm": 1e-3, "nm": 1.0, "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "mm": 1e6}
MAX_IMAGE_PIXELS = 8192 * 8192
"""Pixel budget of one image (67 Mpx): segmenting costs about 40 bytes per pixel (float images, the
distance transform, labels), so 2.7 GB at the budget. Larger images are refused unless the caller
raises the budget (`max_pixels`, the `--max-pixels` flag)."""
_MAX_RESOLUTION_NM = 1e5
"""Resolution tags giving pixels larger than 100 µm are print settings, not an SEM scale."""


def is_image_file(path: str | Path) -> bool:
    """True for the image formats the suite reads (by suffix)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def check_image_size(shape: tuple[int, ...], max_pixels: int | None = MAX_IMAGE_PIXELS,
                     name: str = "image") -> None:
    """Refuse an image of `shape` above `max_pixels` (None: no limit) with one line naming it."""
    pixels = int(np.prod(shape[:2]))
    if max_pixels is not None and pixels > max_pixels:
        raise DataError(f"{name}: {shape[0]}x{shape[1]} = {pixels / 1e6:.1f} Mpx is above the budget of "
                        f"{max_pixels / 1e6:.1f} Mpx (about {40 * pixels / 1e9:.1f} GB to segment); crop or "
                        f"downsample it, or raise the budget with --max-pixels {pixels}")


def read_image(path: str | Path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A 2-D float32 grey image in [0, 1]: 8/16-bit grey, RGB(A) or palette TIFF, PNG or JPEG.

    Integers are divided by their type's maximum (no contrast stretch: that is preprocessing's job);
    RGB becomes luminance; a float image outside [0, 1] is rescaled to it. Images above `max_pixels`
    are refused before their pixels are decoded (`check_image_size`).
    """
    array = _read_raw(path, max_pixels=max_pixels)
    if array.ndim == 3 and array.shape[-1] in (2, 4):  # drop alpha
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise DataError(f"{path}: not a grey or RGB image (array shape {array.shape})")
    image = _to_unit_float(array, path)
    if image.ndim == 3:
        image = image @ _GREY_WEIGHTS
    return np.ascontiguousarray(image, dtype=np.float32)


def read_labels(path: str | Path) -> np.ndarray:
    """An instance mask (0 = background, 1..n = instances) from a one-channel integer TIFF or PNG.

    A palette image gives its indices (annotation tools save label maps that way).
    """
    array = _read_raw(path, indices=True)
    if array.ndim != 2:
        raise DataError(f"{path}: an instance mask must have one channel of integer labels; "
                        f"got array shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.uint16)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(f"{path}: an instance mask must hold integer labels; got {array.dtype} values")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise DataError(f"{path}: an instance mask must not hold negative labels")
    return array.astype(np.uint16 if not array.size or array.max() <= 65535 else np.int32)


def write_image(path: str | Path, array: np.ndarray, pixel_size_nm: float | None = None) -> None:
    """Write a grey image (or uint16 mask) atomically; TIFF records the pixel size.

    Integer arrays are written as they are; float arrays are clipped to [0, 1] and stored as uint16
    (every viewer reads it, 1/65535 precision); bool arrays as 0/255 uint8. The pixel size goes into
    an ImageDescription JSON `{"pixel_size_nm": ...}` and the resolution tags (pixels per
    centimetre), so other tools see it too.
    """
    path = Path(path)
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = np.round(np.clip(array, 0.0, 1.0) * 65535).astype(np.uint16)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: cannot write {suffix or 'a file without suffix'}; "
                         f"use one of {', '.join(IMAGE_SUFFIXES)}")
    if pixel_size_nm is not None and suffix not in TIFF_SUFFIXES:
        raise ValueError(f"{path}: the pixel size can only be recorded in a TIFF file")
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if suffix in TIFF_SUFFIXES:
            _write_tiff(tmp, array, pixel_size_nm)
        else:
            Image.fromarray(array).save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_tiff(path: Path, array: np.ndarray, pixel_size_nm: float | None) -> None:
    kwargs: dict = {"metadata": None}
    if pixel_size_nm is not None:
        if not (pixel_size_nm > 0 and math.isfinite(pixel_size_nm)):
            raise ValueError(f"`pixel_size_nm` must be a positive number; got {pixel_size_nm}")
        per_cm = 1e7 / pixel_size_nm
        kwargs.update(description=json.dumps({"pixel_size_nm": float(pixel_size_nm)}),
                      resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    tifffile.imwrite(path, array, photometric="minisblack" if array.ndim == 2 else "rgb", **kwargs)


def read_pixel_size(path: str | Path) -> tuple[float, str]:
    """(pixel size in nm, source) from a file's metadata; (nan, "unknown") where none is recorded."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        _check_file(path)
        return math.nan, "unknown"
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            for source, reader in (("zeiss", _zeiss_nm), ("fei", _fei_nm), ("tiff", _tiff_nm)):
                nm = reader(tif, page)
                if nm is not None and math.isfinite(nm) and nm > 0:
                    return float(nm), source
    except Exception as exc:  # a broken file or tag raises many types inside tifffile
        raise DataError(f"{path}: cannot read TIFF metadata ({_one_line(exc)})") from exc
    return math.nan, "unknown"


def read_content_rows(path: str | Path) -> int | None:
    """Rows of micrograph above the data bar, from the vendor metadata of a TIFF; None where the file
    records no micrograph height smaller than the image (then only the image can show a bar, see
    `mcn.segment.databar.find_data_bar`). FEI/Thermo: `[Image] ResolutionY`; Zeiss: the height of
    the store resolution `dp_image_store` ("1024 * 768")."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            height = page.imagelength
            rows = None
            if page.is_fei:
                rows = (tif.fei_metadata or {}).get("Image", {}).get("ResolutionY")
            elif page.is_sem:
                store = (tif.sem_metadata or {}).get("dp_image_store")
                match = re.fullmatch(r"\s*\d+\s*\*\s*(\d+)\s*", str(store[1])) if store and len(store) > 1 else None
                rows = int(match.group(1)) if match else None
    except Exception as exc:  # a broken file or tag raises many types inside tifffile
        raise DataError(f"{path}: cannot read TIFF metadata ({_one_line(exc)})") from exc
    return int(rows) if isinstance(rows, int) and 0 < rows < height else None


def _zeiss_nm(tif: tifffile.TiffFile, page) -> float | None:
    """`ap_image_pixel_size`, parsed by tifffile as ('Image Pixel Size', 12.3, 'nm')."""
    entry = (tif.sem_metadata or {}).get("ap_image_pixel_size") if page.is_sem else None
    if not entry or len(entry) < 2:
        return None
    value, unit = entry[1], entry[2] if len(entry) > 2 else ""
    if isinstance(value, str):  # "12.3nm": a value tifffile could not split
        match = re.fullmatch(r"\s*([-+.\deE]+)\s*(\S*)\s*", value)
        value, unit = match.groups() if match else (value, unit)
    try:
        return float(value) * _LENGTH_IN_NM[unit]
    except (KeyError, ValueError):
        return None


def _fei_nm(tif: tifffile.TiffFile, page) -> float | None:
    """`[Scan] PixelWidth`, metres."""
    scan = (tif.fei_metadata or {}).get("Scan", {}) if page.is_fei else {}
    width = scan.get("PixelWidth")
    return float(width) * 1e9 if isinstance(width, (int, float)) else None


def _tiff_nm(tif: tifffile.TiffFile, page) -> float | None:
    """Our JSON description, else an ImageJ calibration, else resolution tags in centimetres."""
    try:
        described = json.loads(page.description or "null")
    except ValueError:
        described = None
    if isinstance(described, dict) and isinstance(described.get("pixel_size_nm"), (int, float)):
        return float(described["pixel_size_nm"])
    xres = page.resolution[0] if page.resolution else 0
    if not xres:
        return None
    if tif.is_imagej:
        unit = str((tif.imagej_metadata or {}).get("unit", "")).replace("\\u00B5", "µ")
        return _LENGTH_IN_NM[unit] / xres if unit in _LENGTH_IN_NM else None
    if page.resolutionunit == tifffile.RESUNIT.CENTIMETER:
        nm = 1e7 / xres
        return nm if nm <= _MAX_RESOLUTION_NM else None
    return None


def _check_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")


def _read_raw(path: str | Path, indices: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """The stored pixel array (first page of a TIFF); palettes are applied unless `indices` (masks).
    The size is checked against `max_pixels` from the header, before decoding."""
    _check_file(path)
    try:
        if Path(path).suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                check_image_size((page.imagelength, page.imagewidth), max_pixels, str(path))
                array = page.asarray()
                palette = page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None
                if palette and not indices:
                    array = np.moveaxis(np.take(page.colormap, array, axis=1), 0, -1)  # (h, w, rgb)
                elif page.axes.startswith("S") and array.ndim == 3:  # planar RGB
                    array = np.moveaxis(array, 0, -1)
            return array
        with Image.open(path) as img:
            check_image_size((img.height, img.width), max_pixels, str(path))
            keep = ("1", "L", "LA", "I", "I;16", "I;16B", "F", "RGB", "RGBA") + (("P",) if indices else ())
            if img.mode not in keep:
                img = img.convert("RGB")
            return np.asarray(img)
    except DataError:
        raise
    except Exception as exc:  # tifffile, Pillow and imagecodecs raise many types for a broken file
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {_one_line(exc)})") from exc


def _to_unit_float(array: np.ndarray, path: str | Path) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.float32)
    if array.dtype == np.int32 and array.size and 0 <= array.min() and array.max() <= 65535:
        array = array.astype(np.uint16)  # PIL's mode "I" for 16-bit PNGs
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array.astype(np.float32) / np.iinfo(array.dtype).max, 0.0, 1.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: unsupported pixel type {array.dtype}")
    image = np.nan_to_num(array.astype(np.float32))
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 1.0)
    if low >= 0.0 and high <= 1.0:
        return image
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def pixel_size_for(path: str | Path, table_nm: float = math.nan, table_source: str = "",
                   explicit_nm: float | None = None) -> tuple[float, str]:
    """The pixel size of one image by priority: explicit argument > table > file metadata > unknown.

    An explicit value (a CLI flag) is the user's deliberate statement and wins; a table
    (images.csv, manifest.csv) is curated per image and beats what the instrument wrote; the file's
    own metadata comes next. The file is opened only when it is needed.
    """
    if explicit_nm is not None:
        if not (explicit_nm > 0 and math.isfinite(explicit_nm)):
            raise DataError(f"pixel size must be a positive number of nm; got {explicit_nm}")
        return float(explicit_nm), "cli"
    if table_nm > 0 and math.isfinite(table_nm):
        return float(table_nm), table_source
    return read_pixel_size(path)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
