"""Write a synthetic data set in the scene format, and keep the default one cached.

Layout written (the suite's scene format plus ground truth):
    images/<image_id>.tif   8-bit grey micrograph, pixel size in its TIFF metadata
    masks/<image_id>.tif    uint16 instance labels, 0 = background
    ignore/<image_id>.tif   1 where a crystal is visible but not in the mask (segmentation scoring)
    crystals.csv            image_id,instance_id,label,sample_id + ground truth (see README.md there)
    images.csv              image_id,sample_id,pixel_size_nm
    contact_sheet.png       examples of each class
    synthetic.json          generator version, seed, geometry and every knob used
    README.md               what the files and columns mean

Everything is drawn from `np.random.SeedSequence(seed)` streams and no file holds a time stamp, so
one seed gives byte-identical masks, images and tables. Output is built in a temporary folder beside
the target and moved into place at the end: an interrupted run leaves no half data set.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion
from tqdm import tqdm

from mcn.data.dataset import square_resize
from mcn.data.io import write_image
from mcn.files import remove_own
from mcn.data.synthetic.config import CLASSES, SceneConfig
from mcn.data.synthetic.scene import RenderedScene, draw_samples, render_scene

GENERATOR_VERSION = 1
"""Bump when the same seed and knobs would draw different scenes: it names the cache folder."""

OUTPUTS = ("images", "masks", "ignore", "crystals.csv", "images.csv", "contact_sheet.png", "synthetic.json", "README.md")

EXAMPLES_PER_CLASS = 8
"""Crystals per class on the contact sheet."""

CRYSTAL_COLUMNS = ("image_id", "instance_id", "label", "sample_id", "true_label", "shape", "rounding",
                   "visible_fraction", "equivalent_diameter_nm", "area_nm2", "touches_border")

README = """# Synthetic SEM microcrystal scenes (mcn.data.synthetic v{version})

Rendered calcite microcrystals in the scene format; regenerate with
`python -m mcn.data.synthetic --out DIR --seed {seed} --images {n_images} --image-size {image_size} --pixel-size-nm {pixel_size_nm}`
(plus the knobs in synthetic.json).

- images/<image_id>.tif: 8-bit secondary-electron micrograph; pixel size {pixel_size_nm} nm in the TIFF metadata.
- masks/<image_id>.tif: uint16 instance labels of the visible crystal pixels, 0 = background.
  A crystal less than {min_visible_fraction:.0%} visible (hidden behind others or cut by the image edge)
  or whose visible piece is under {min_visible_area_nm2:.0f} nm2 is left out: it is not worth classifying.
- ignore/<image_id>.tif: 1 on the visible pixels of those left-out crystals. A segmenter that finds
  one has found a real crystal, so segmentation scoring (`mcn.segment.evaluate`) does not count it
  as a false positive.
- crystals.csv: one row per mask instance.
  label (what an expert wrote, with {label_noise:.0%} disputed labels), true_label (the rendered class),
  shape (3-D habit), rounding (edge rounding / size of faceted crystals; 1 for anhedral ones),
  visible_fraction (visible / full projection), equivalent_diameter_nm and area_nm2 (of the full,
  un-occluded projection), touches_border (the visible part reaches the image edge).
- images.csv: image_id, sample_id, pixel_size_nm. Images of one sample share class mix, sizes and
  imaging conditions: group cross-validation by image_id (or sample_id).
- contact_sheet.png: examples per class. synthetic.json: every knob used.
"""


def generate(out_dir: str | Path, n_images: int = 48, image_size: int = 1024, pixel_size_nm: float = 20.0,
             seed: int = 0, overwrite: bool = False, progress: bool = True, **knobs) -> Path:
    """Render `n_images` scenes into `out_dir` and return it.

    The default (48 images of 1024 x 1024 px at 20 nm) shows the same 20.5 um fields as the paper's
    2048 x 2048 px at 10 nm, at a quarter of the pixels; `image_size=2048, pixel_size_nm=10` gives
    the paper's geometry with the same crystals per image. `knobs` are `SceneConfig` fields.
    Refuses a non-empty `out_dir` unless `overwrite` (then only the generator's own outputs there
    are replaced). `progress`: a bar over the images on a terminal (False: never).
    """
    config = SceneConfig.from_knobs(**knobs)
    _check_geometry(n_images, image_size, pixel_size_nm, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir}: folder is not empty; choose another or pass overwrite=True (--overwrite)")
        _check_own(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        _write_dataset(tmp, config, n_images, image_size, pixel_size_nm, seed, progress)
        _install(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def default_dataset_dir() -> Path:
    """The default data set (seed 0, default knobs), generated on first use into the cache.

    The cache is `$MCN_CACHE` or `~/.cache/mcn`; the folder name carries the generator version, so a
    new generator never reuses an old cache. A cache missing one of `OUTPUTS` (written before the
    ignore masks existed) is rebuilt: same seed, so the same images, masks and tables."""
    root = Path(os.environ.get("MCN_CACHE") or Path.home() / ".cache" / "mcn")
    target = root / f"synthetic-v{GENERATOR_VERSION}-seed0"
    if all((target / name).exists() for name in OUTPUTS):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.tmp-"))
    try:
        generate(staging / "data", seed=0)
        if target.exists():  # the incomplete cache: moved aside, removed with the staging folder
            os.replace(target, staging / "incomplete")
        try:
            os.replace(staging / "data", target)
        except OSError:  # another process finished first; its copy is identical
            if not (target / "crystals.csv").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_geometry(n_images: int, image_size: int, pixel_size_nm: float, seed: int) -> None:
    checks = [
        (isinstance(n_images, (int, np.integer)) and n_images >= 1, f"`n_images` must be an integer >= 1; got {n_images!r}."),
        (isinstance(image_size, (int, np.integer)) and image_size >= 64,
         f"`image_size` must be an integer >= 64 (pixels); got {image_size!r}."),
        (isinstance(pixel_size_nm, (int, float)) and np.isfinite(pixel_size_nm) and pixel_size_nm > 0,
         f"`pixel_size_nm` must be a positive number; got {pixel_size_nm!r}."),
        (isinstance(seed, (int, np.integer)) and seed >= 0, f"`seed` must be an integer >= 0; got {seed!r}."),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _write_dataset(root: Path, config: SceneConfig, n_images: int, image_size: int, pixel_size_nm: float,
                   seed: int, progress: bool) -> None:
    (root / "images").mkdir()
    (root / "masks").mkdir()
    (root / "ignore").mkdir()
    n_samples = min(config.n_samples, n_images)
    sample_of = np.arange(n_images) * n_samples // n_images
    sample_seq, *image_seqs = np.random.SeedSequence(seed).spawn(1 + n_images)
    field_nm = image_size * pixel_size_nm
    samples = draw_samples(np.random.default_rng(sample_seq), config, n_samples,
                           np.bincount(sample_of, minlength=n_samples), field_nm, pixel_size_nm)
    crystal_rows, image_rows, examples = [], [], {c: [] for c in CLASSES}
    for i in tqdm(range(n_images), desc="synthetic scenes", unit="image", disable=None if progress else True):
        sample = samples[sample_of[i]]
        image_id = f"{sample.sample_id}_img{i:03d}"
        scene = render_scene(np.random.default_rng(image_seqs[i]), config, sample, image_size, pixel_size_nm)
        write_image(root / "images" / f"{image_id}.tif", scene.image, pixel_size_nm)
        write_image(root / "masks" / f"{image_id}.tif", scene.mask)
        write_image(root / "ignore" / f"{image_id}.tif", scene.ignore.astype(np.uint8))
        image_rows.append({"image_id": image_id, "sample_id": sample.sample_id, "pixel_size_nm": pixel_size_nm})
        crystal_rows += [{"image_id": image_id, "sample_id": sample.sample_id, **row} for row in scene.rows]
        _collect_examples(scene, examples)
    _write_csv(root / "crystals.csv", CRYSTAL_COLUMNS, crystal_rows)
    _write_csv(root / "images.csv", ("image_id", "sample_id", "pixel_size_nm"), image_rows)
    counts = {c: sum(r["label"] == c for r in crystal_rows) for c in CLASSES}
    info = {
        "generator": "mcn.data.synthetic", "version": GENERATOR_VERSION, "seed": seed, "n_images": n_images,
        "image_size": image_size, "pixel_size_nm": pixel_size_nm, "n_crystals": len(crystal_rows),
        "class_counts": counts, "knobs": config.to_dict(),
        "samples": [{"sample_id": s.sample_id, "class_mix": [round(float(x), 4) for x in s.class_mix],
                     "size_median_nm": round(s.size_median_nm, 1), "size_sigma": round(s.size_sigma, 4)}
                    for s in samples],
    }
    (root / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n")
    (root / "README.md").write_text(README.format(version=GENERATOR_VERSION, seed=seed, n_images=n_images,
                                                  image_size=image_size, pixel_size_nm=pixel_size_nm,
                                                  label_noise=config.label_noise,
                                                  min_visible_fraction=config.min_visible_fraction,
                                                  min_visible_area_nm2=config.min_visible_area_nm2))
    _contact_sheet(root / "contact_sheet.png", examples)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _check_own(out_dir: Path) -> None:
    """Refuse to overwrite outputs the generator did not write: its names in a folder without its
    synthetic.json, or images/ and masks/ holding files other than the images its images.csv lists."""
    present = [name for name in OUTPUTS if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    if not present:
        return
    if not (out_dir / "synthetic.json").is_file() or not (out_dir / "images.csv").is_file():
        raise FileExistsError(f"{out_dir}: holds {', '.join(present)} but was not written by the generator "
                              "(no synthetic.json, images.csv); refusing to overwrite them: choose another --out")
    with open(out_dir / "images.csv", newline="") as handle:
        own = {f"{row['image_id']}.tif" for row in csv.DictReader(handle)}
    for folder in ("images", "masks", "ignore"):
        path = out_dir / folder
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise FileExistsError(f"{path}: not the generator's folder; refusing to overwrite it")
        foreign = sorted(p.name for p in path.iterdir() if p.name not in own) if path.is_dir() else []
        if foreign:
            raise FileExistsError(f"{path / foreign[0]}: not written by the generator ({len(foreign)} such "
                                  "file(s)); refusing to overwrite the folder: move them or choose another --out")


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished outputs into `out_dir` (a fresh folder is renamed in one step)."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
        return
    remove_own(out_dir, [name for name in OUTPUTS if (out_dir / name).is_dir()])  # checked by _check_own
    for name in OUTPUTS:
        os.replace(tmp / name, out_dir / name)


def _collect_examples(scene: RenderedScene, examples: dict[str, list]) -> None:
    """Keep crops of well-visible crystals, up to two per class per image, for the contact sheet."""
    taken = {c: 0 for c in CLASSES}
    for row in scene.rows:
        c = row["true_label"]
        if (row["visible_fraction"] < 0.85 or row["touches_border"] or taken[c] >= 2
                or len(examples[c]) >= EXAMPLES_PER_CLASS):
            continue
        rr, cc = np.nonzero(scene.mask == row["instance_id"])
        pad = max(4, int(0.15 * max(np.ptp(rr), np.ptp(cc))))
        r0, c0 = max(rr.min() - pad, 0), max(cc.min() - pad, 0)
        examples[c].append((scene.image[r0:rr.max() + pad, c0:cc.max() + pad],
                            scene.mask[r0:rr.max() + pad, c0:cc.max() + pad] == row["instance_id"]))
        taken[c] += 1


def _contact_sheet(path: Path, examples: dict[str, list], tile: int = 112) -> None:
    """One row per class: crystals in their scene context, their visible outline in orange.

    Tiles are composed as one mosaic array (one matplotlib image, fast) with `square_resize`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gap = 6
    mosaic = np.ones(((tile + gap) * len(CLASSES), (tile + gap) * EXAMPLES_PER_CLASS, 3))
    for r, c in enumerate(CLASSES):
        for k, (crop, mask) in enumerate(examples[c]):
            grey = square_resize(crop.astype(np.float32) / 255, tile)
            edge = square_resize((mask & ~binary_erosion(mask)).astype(np.float32), tile) > 0.25
            rgb = np.repeat(grey[..., None], 3, axis=2)
            rgb[edge] = (1.0, 0.69, 0.0)
            y, x = r * (tile + gap), k * (tile + gap)
            mosaic[y:y + tile, x:x + tile] = rgb
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] / 100 + 0.6, mosaic.shape[0] / 100 + 0.5))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(tile + gap) * r + tile / 2 for r in range(len(CLASSES))], CLASSES, fontsize=11)
    ax.set_frame_on(False)
    ax.set_title("Synthetic SEM microcrystals by class (true label; orange = visible mask outline)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
