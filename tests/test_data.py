"""Data layer: SEM image I/O and pixel size, scene and patch readers, bad input, balancing, splits."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from mcn.data.balance import apply_rotations, balance_by_rotation
from mcn.data.io import read_image, read_labels, read_pixel_size, write_image
from mcn.data.load import load_dataset
from mcn.data.patches import given_split, load_patch_folder, patch_mask
from mcn.data.scenes import iter_scenes, load_scenes
from mcn.data.splits import (folds_hash, grouped_folds, holdout_split, inner_folds, make_folds,
                             resolve_grouping)
from mcn.errors import DataError



def _zeiss_tiff(path: Path, image_pixel_size: str, pixels: np.ndarray | None = None) -> None:
    """A Zeiss SEM TIFF: CZ_SEM text (cp1252, as the instrument writes it) with a monitor pixel size too."""
    text = ("0\r\n0\r\nDV_DEVICE\r\nDevice = SEM\r\nAP_PIXEL_SIZE\r\nPixel Size = 456.7 nm\r\n"
            f"AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = {image_pixel_size}\r\nDP_ZOOM\r\nZoom = Off\r\nEND\r\n")
    data = text.encode("cp1252")
    pixels = np.full((16, 16), 100, np.uint8) if pixels is None else pixels
    tifffile.imwrite(path, pixels, extratags=[(34118, "B", len(data), data, True)])


@pytest.mark.parametrize("value, nm", [("12.34 nm", 12.34), ("1.5 µm", 1500.0), ("850 pm", 0.85)])
def test_zeiss_pixel_size_uses_image_pixel_size(tmp_path, value, nm):
    _zeiss_tiff(tmp_path / "z.tif", value)
    size, source = read_pixel_size(tmp_path / "z.tif")
    assert source == "zeiss" and size == pytest.approx(nm)


@pytest.mark.parametrize("tag", [34680, 34682])
def test_fei_pixel_size_from_scan_pixel_width(tmp_path, tag):
    text = "[User]\r\nDate=01/02/2024\r\n[Scan]\r\nPixelWidth=2.5e-08\r\nPixelHeight=2.5e-08\r\n[Beam]\r\nHV=15000\r\n"
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((16, 16), np.uint16), extratags=[(tag, "s", 0, text, True)])
    size, source = read_pixel_size(tmp_path / "f.tif")
    assert source == "fei" and size == pytest.approx(25.0)


def test_write_image_round_trip_keeps_pixels_and_pixel_size(tmp_path):
    image = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    write_image(tmp_path / "a.tif", image, pixel_size_nm=12.3)
    back = read_image(tmp_path / "a.tif")
    assert back.dtype == np.float32 and back.shape == (20, 30)
    np.testing.assert_allclose(back, image, atol=1 / 65535)
    assert read_pixel_size(tmp_path / "a.tif") == (pytest.approx(12.3), "tiff")
    labels = np.arange(600, dtype=np.uint16).reshape(20, 30)
    write_image(tmp_path / "m.tif", labels)
    np.testing.assert_array_equal(read_labels(tmp_path / "m.tif"), labels)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_pixel_size_from_resolution_tags_only_when_physical(tmp_path):
    tifffile.imwrite(tmp_path / "cm.tif", np.zeros((8, 8), np.uint8), resolution=(5e5, 5e5),
                     resolutionunit="CENTIMETER")
    assert read_pixel_size(tmp_path / "cm.tif") == (pytest.approx(20.0), "tiff")
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((8, 8), np.uint8), imagej=True, resolution=(50, 50),
                     metadata={"unit": "micron"})  # an ImageJ/Fiji calibration: 0.02 µm per pixel
    assert read_pixel_size(tmp_path / "ij.tif") == (pytest.approx(20.0), "tiff")
    tifffile.imwrite(tmp_path / "dpi.tif", np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    for name in ("dpi.tif", "a.png"):
        size, source = read_pixel_size(tmp_path / name)
        assert math.isnan(size) and source == "unknown"


def test_read_image_formats_give_grey_float_in_unit_range(tmp_path):
    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    Image.fromarray((ramp * 255).astype(np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    rgb = np.stack([(ramp * 255).astype(np.uint8)] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    grey_map = np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))
    tifffile.imwrite(tmp_path / "palette.tif", (ramp * 255).astype(np.uint8), photometric="palette",
                     colormap=grey_map)
    for name in ("g8.png", "g16.png", "rgb.jpg", "rgb.tif", "palette.tif"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.float32 and image.shape == (32, 32), name
        np.testing.assert_allclose(image, ramp, atol=0.02, err_msg=name)


@pytest.mark.parametrize("name", ["junk.tif", "junk.png", "junk.jpg"])
def test_unreadable_image_names_the_file(tmp_path, name):
    (tmp_path / name).write_text("not an image")
    with pytest.raises(DataError, match=name):
        read_image(tmp_path / name)
    with pytest.raises(DataError, match="missing.tif"):
        read_image(tmp_path / "missing.tif")


def test_masks_rgb_refused_palette_gives_indices(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="m.tif"):
        read_labels(tmp_path / "m.tif")
    labels = np.arange(64, dtype=np.uint8).reshape(8, 8) % 5
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette(list(np.random.default_rng(0).integers(0, 255, 768)))
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "p.png"), labels)


# --- scene folders -------------------------------------------------------------------------------

def _disc(labels: np.ndarray, instance: int, r: int, c: int, radius: int) -> None:
    rr, cc = np.ogrid[: labels.shape[0], : labels.shape[1]]
    labels[(rr - r) ** 2 + (cc - c) ** 2 <= radius**2] = instance


def _write_scene(root: Path, rows: list[tuple], images_csv: list[tuple] | None = None,
                 shapes: dict[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Two 60x80 scenes (a, b) of discs; `rows` = crystals.csv rows; returns the images."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    images = {}
    for image_id, discs in {"a": [(1, 20, 20, 8), (2, 40, 55, 10), (3, 3, 70, 5)], "b": [(1, 30, 30, 12)]}.items():
        labels = np.zeros((60, 80), np.uint16)
        for disc in discs:
            _disc(labels, *disc)
        image = (0.2 + 0.6 * rng.random((60, 80))).astype(np.float32)
        images[image_id] = image
        write_image(root / "images" / f"{image_id}.tif", image)
        shape = (shapes or {}).get(image_id)
        write_image(root / "masks" / f"{image_id}.tif", labels if shape is None else np.zeros(shape, np.uint16))
    pd.DataFrame(rows, columns=["image_id", "instance_id", "label"]).to_csv(root / "crystals.csv", index=False)
    if images_csv is not None:
        pd.DataFrame(images_csv, columns=["image_id", "sample_id", "pixel_size_nm"]).to_csv(
            root / "images.csv", index=False)
    return images


GOOD_ROWS = [("a", 1, "AA"), ("a", 2, "RES"), ("a", 3, "AA"), ("b", 1, "PES")]


def test_scene_crops_are_masked_with_margin_groups_and_pixel_size(tmp_path):
    images = _write_scene(tmp_path, GOOD_ROWS, images_csv=[("a", "s1", 15.0), ("b", "s2", None)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_scenes(tmp_path, margin=0.25)
    assert ds.class_names == ("RES", "PES", "AA")  # the paper's order, absent RA left out
    assert list(ds.crystal_ids) == ["a/1", "a/2", "a/3", "b/1"]
    assert list(ds.image_ids) == ["a", "a", "a", "b"] and list(ds.sample_ids) == ["s1", "s1", "s1", "s2"]
    assert [ds.class_names[k] for k in ds.labels] == ["AA", "RES", "AA", "PES"]
    # disc 1 of a: bbox rows/cols 12..29 (17 px), margin round(0.25*17)=4 each side
    assert tuple(ds.bboxes[0]) == (8, 8, 33, 33)
    crop, mask = ds.crops[0], ds.crop_masks[0]
    assert crop.shape == mask.shape == (25, 25) and mask.sum() == np.count_nonzero(crop)
    np.testing.assert_allclose(crop[mask], images["a"][8:33, 8:33][mask], atol=1 / 65535)
    assert np.all(crop[~mask] == 0)
    assert list(ds.touches_border) == [False, False, True, False]
    assert list(ds.pixel_size_source) == ["images.csv"] * 3 + ["unknown"]
    assert ds.pixel_size_nm[0] == 15.0 and math.isnan(ds.pixel_size_nm[3])
    forced = load_scenes(tmp_path, pixel_size_nm=7.5)
    assert set(forced.pixel_size_source) == {"cli"} and np.all(forced.pixel_size_nm == 7.5)


def test_scene_pixel_size_from_tiff_metadata_when_no_table(tmp_path):
    _write_scene(tmp_path, GOOD_ROWS)
    _zeiss_tiff(tmp_path / "images" / "a.tif", "20 nm", tifffile.imread(tmp_path / "images" / "a.tif"))
    write_image(tmp_path / "images" / "b.tif", read_image(tmp_path / "images" / "b.tif"), pixel_size_nm=33.0)
    scenes = {s.image_id: s for s in iter_scenes(tmp_path)}
    assert (scenes["b"].pixel_size_nm, scenes["b"].pixel_size_source) == (33.0, "tiff")
    assert (scenes["a"].pixel_size_nm, scenes["a"].pixel_size_source) == (20.0, "zeiss")
    assert scenes["a"].labels.dtype == np.uint16 and scenes["a"].image.shape == (60, 80)


def test_scene_skips_unmatched_instances_and_rows_with_one_warning(tmp_path):
    rows = [("a", 1, "AA"), ("a", 2, ""), ("a", 9, "RES"), ("b", 1, "PES"), ("zz", 1, "AA")]
    _write_scene(tmp_path, rows)
    with pytest.warns(UserWarning) as record:
        ds = load_scenes(tmp_path)
    assert len(record) == 1
    message = str(record[0].message)
    for part in ("1 crystals.csv rows without a label", "1 mask instances without a crystals.csv row",
                 "1 crystals.csv rows without a mask instance", "1 crystals.csv rows for images missing"):
        assert part in message
    assert list(ds.crystal_ids) == ["a/1", "b/1"]


def test_scene_empty_mask_is_skipped_with_warning(tmp_path):
    _write_scene(tmp_path, GOOD_ROWS)
    write_image(tmp_path / "masks" / "b.tif", np.zeros((60, 80), np.uint16))
    with pytest.warns(UserWarning, match="1 masks with no crystal"):
        ds = load_scenes(tmp_path)
    assert set(ds.image_ids) == {"a"}


def test_scene_bad_input_is_one_line_error_naming_the_file(tmp_path):
    _write_scene(tmp_path / "size", GOOD_ROWS, shapes={"b": (60, 81)})
    with pytest.raises(DataError, match=r"b\.tif: mask is 60x81 but its image b.tif is 60x80"):
        load_scenes(tmp_path / "size")
    _write_scene(tmp_path / "nomask", GOOD_ROWS)
    (tmp_path / "nomask" / "masks" / "a.tif").unlink()
    with pytest.raises(DataError, match="mask not found for image 'a'"):
        load_scenes(tmp_path / "nomask")
    _write_scene(tmp_path / "junk", GOOD_ROWS)
    (tmp_path / "junk" / "images" / "a.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=r"a\.tif: not a readable image"):
        load_scenes(tmp_path / "junk")
    _write_scene(tmp_path / "cols", GOOD_ROWS)
    pd.DataFrame({"image_id": ["a"], "label": ["AA"]}).to_csv(tmp_path / "cols" / "crystals.csv", index=False)
    with pytest.raises(DataError, match=r"crystals\.csv: missing column\(s\) instance_id"):
        load_scenes(tmp_path / "cols")
    _write_scene(tmp_path / "none", [("a", 7, "AA")])
    with pytest.raises(DataError, match="no labelled crystals"), pytest.warns(UserWarning):
        load_scenes(tmp_path / "none")


def test_ampis_powder_real_scenes(ampis_dir):
    ds = load_dataset(ampis_dir)
    assert len(ds) == 1360 and len(set(ds.image_ids)) == 5
    assert ds.class_names == ("powder",) and set(ds.pixel_size_source) == {"unknown"}
    assert all(c.shape == m.shape and np.all(c[~m] == 0) and m.any() for c, m in zip(ds.crops, ds.crop_masks))
    assert 0 < ds.touches_border.sum() < len(ds)
    assert ds.subset(np.arange(20)).patches(32).shape == (20, 32, 32, 1)


# --- patch folders -------------------------------------------------------------------------------

def _patch(value: float = 0.8, size: int = 24) -> np.ndarray:
    """A bright disc with a hole and a speck of bright noise in a corner, on a dark background."""
    labels = np.zeros((size, size), np.uint16)
    _disc(labels, 1, size // 2, size // 2, size // 3)
    image = np.where(labels > 0, value, 0.0)
    image[size // 2, size // 2] = 0.0  # a hole: filled in the mask
    image[0, 0] = value  # a speck: not the largest component
    return image


def _write_patches(root: Path, layout: dict[str, int], suffix: str = ".png") -> None:
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_image(root / folder / f"p{i}{suffix}", (_patch() * 255).astype(np.uint8))


def test_patch_mask_fills_holes_and_keeps_largest_component():
    mask = patch_mask(_patch())
    disc = np.zeros((24, 24), np.uint16)
    _disc(disc, 1, 12, 12, 8)
    assert mask[12, 12] and not mask[0, 0]
    np.testing.assert_array_equal(mask, disc > 0)


def test_patch_folder_without_manifest_groups_by_file(tmp_path):
    _write_patches(tmp_path, {"RA": 2, "RES": 3, "AA": 0})
    (tmp_path / "RES" / "notes.txt").write_text("x")
    with pytest.warns(UserWarning) as record:
        ds = load_patch_folder(tmp_path)
    messages = " | ".join(str(r.message) for r in record)
    assert "each patch file is its own CV group" in messages
    assert "1 non-image files" in messages and "1 empty class folder(s) (AA)" in messages
    assert ds.class_names == ("RES", "RA") and ds.class_counts() == {"RES": 3, "RA": 2}
    assert len(set(ds.image_ids)) == 5 and set(ds.pixel_size_source) == {"unknown"}
    assert not ds.crop_masks[0][0, 0] and ds.crops[0][0, 0] == 0  # the speck is outside the crystal


def test_patch_folder_with_manifest_uses_its_groups_and_pixel_size(tmp_path):
    _write_patches(tmp_path, {"RES": 2, "PES": 2})
    rows = [("RES/p0.png", "RES", "img1", "s", 10.0), ("RES/p1.png", "RES", "img2", "s", None),
            ("PES/p0.png", "PES", "img1", "s", 10.0), ("PES/p1.png", "PES", "img2", "s", None)]
    pd.DataFrame(rows, columns=["path", "label", "image_id", "sample_id", "pixel_size_nm"]).to_csv(
        tmp_path / "manifest.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(tmp_path)
    assert list(ds.image_ids) == ["img1", "img2", "img1", "img2"]
    assert list(ds.pixel_size_source) == ["manifest", "unknown", "manifest", "unknown"]
    assert ds.pixel_size_nm[0] == 10.0 and ds.class_names == ("RES", "PES")
    pd.DataFrame(rows[:3] + [("PES/gone.png", "PES", "img2", "s", None)],
                 columns=["path", "label", "image_id", "sample_id", "pixel_size_nm"]).to_csv(
        tmp_path / "manifest.csv", index=False)
    with pytest.raises(DataError, match=r"manifest\.csv: row 5: file 'PES/gone.png' not found"):
        load_dataset(tmp_path)


def test_presplit_patch_folder_gives_its_split_as_a_fold(tmp_path):
    for part, count in {"train": 3, "val": 1, "test": 2, "extra": 1}.items():
        _write_patches(tmp_path / part, {"RES": count, "AA": count})
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(tmp_path)
    messages = " | ".join(str(r.message) for r in record)
    assert "own CV group" in messages and "1 folder(s) beside train/ val/ test/ (extra)" in messages
    fold = given_split(ds)
    assert len(ds) == 12 and (len(fold.train), len(fold.val), len(fold.test)) == (6, 2, 4)
    assert all(ds.crystal_ids[i].startswith("test/") for i in fold.test)
    assert set(fold.train) | set(fold.val) | set(fold.test) == set(range(12))
    _write_scene(tmp_path / "scene", GOOD_ROWS)
    assert given_split(load_dataset(tmp_path / "scene")) is None


def test_patch_folder_bad_input(tmp_path):
    _write_patches(tmp_path / "junk", {"RES": 1})
    (tmp_path / "junk" / "RES" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match=r"bad\.jpg"), pytest.warns(UserWarning):
        load_patch_folder(tmp_path / "junk")
    _write_patches(tmp_path / "dark", {"RES": 1})
    write_image(tmp_path / "dark" / "RES" / "black.png", np.zeros((10, 10), np.uint8))
    with pytest.warns(UserWarning) as record:
        ds = load_patch_folder(tmp_path / "dark")
    assert len(ds) == 1 and any("1 patches with no pixel above" in str(r.message) for r in record)


def test_load_dataset_without_path_reads_the_default_synthetic_set(tmp_path, monkeypatch):
    import mcn.data.synthetic

    _write_scene(tmp_path, GOOD_ROWS)
    monkeypatch.setattr(mcn.data.synthetic, "default_dataset_dir", lambda: tmp_path)
    assert len(load_dataset()) == 4


def test_load_dataset_refuses_missing_file_and_empty_paths(tmp_path):
    with pytest.raises(DataError, match="no such data set folder"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match="not a file"):
        load_dataset(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no crystal patches found"):
        load_dataset(tmp_path / "empty")


# --- balancing -----------------------------------------------------------------------------------

def test_balance_by_rotation_equalises_classes_with_distinct_rotations():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 2)
    index, k = balance_by_rotation(labels, seed=3)
    assert np.bincount(labels[index]).tolist() == [10, 10, 10]
    assert np.array_equal(index[:16], np.arange(16)) and np.all(k[:16] == 0)
    assert np.all(k[16:] > 0) and np.all(labels[index[16:]] != 0)
    pairs = list(zip(index[labels[index] == 1], k[labels[index] == 1]))
    assert len(set(pairs)) == len(pairs)  # 4 crystals x up to 4 rotations: no duplicate copy needed
    again = balance_by_rotation(labels, seed=3)
    assert np.array_equal(again[0], index) and np.array_equal(again[1], k)


def test_apply_rotations_rotates_each_copy():
    x = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
    out = apply_rotations(x, np.array([0, 1]))
    np.testing.assert_array_equal(out[0], x[0])
    np.testing.assert_array_equal(out[1, :, :, 0], np.rot90(x[1, :, :, 0]))
    with pytest.raises(ValueError):
        apply_rotations(np.zeros((1, 3, 4, 1)), np.array([1]))


def _toy_groups(n_images: int = 30, per_image: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"img{i}" for i in range(n_images)], per_image)
    labels = rng.integers(0, 4, size=len(groups))
    return labels, groups


def test_balanced_training_arrays_hold_rotations_of_training_crystals_only(tiny_dataset):
    from mcn.train import training_arrays

    fold = make_folds(tiny_dataset, n_splits=2, seed=0, group_by="image")[0]
    patches = tiny_dataset.patches(24)
    x, y = training_arrays(tiny_dataset, fold, 24, balance=True, seed=0)

    def keys(index):
        return {np.rot90(patches[i], r).tobytes(): tiny_dataset.labels[i] for i in index for r in range(4)}

    train, held = keys(fold.train), keys(np.concatenate([fold.val, fold.test]))
    assert len(x) > len(fold.train)  # the balancing added rotated copies
    for patch, label in zip(x, y):
        key = patch.tobytes()
        assert key in train and train[key] == label  # a training crystal (maybe rotated), its own label
        assert key not in held or key in train      # never a validation or test crystal
    counts = np.bincount(y, minlength=tiny_dataset.num_classes)
    assert (counts[counts > 0] == counts.max()).all()


# --- splits (mcn/data/splits.py) -----------------------------------------------------------------

def test_grouped_folds_never_share_an_image_between_parts():
    labels, groups = _toy_groups()
    folds = grouped_folds(labels, groups, n_splits=5, seed=0, class_names=["a", "b", "c", "d"])
    assert len(folds) == 5
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(labels)))  # each crystal tested exactly once
    for fold in folds:
        train, val, test = (set(groups[p]) for p in (fold.train, fold.val, fold.test))
        assert not train & test and not val & test and not train & val and val
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(labels)
    hold = holdout_split(labels, groups, seed=0, class_names=["a", "b", "c", "d"])
    parts = [set(groups[p]) for p in (hold.train, hold.val, hold.test)]
    assert not parts[0] & parts[2] and not parts[1] & parts[2] and not parts[0] & parts[1]


def test_grouped_folds_are_reproducible_per_seed():
    labels, groups = _toy_groups()
    a, b = (grouped_folds(labels, groups, seed=4, class_names=["a", "b", "c", "d"]) for _ in range(2))
    assert all(np.array_equal(x.test, y.test) and np.array_equal(x.val, y.val) for x, y in zip(a, b))
    c = grouped_folds(labels, groups, seed=5, class_names=["a", "b", "c", "d"])
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_grouped_folds_refuse_impossible_requests():
    labels, groups = _toy_groups()
    labels[np.isin(groups, ["img0", "img1", "img2"])] = 3
    labels[(labels == 3) & ~np.isin(groups, ["img0", "img1", "img2"])] = 0
    with pytest.raises(ValueError, match=r"3 for 'd'"):
        grouped_folds(labels, groups, n_splits=5, class_names=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="source images"):
        grouped_folds(labels[:16], groups[:16], n_splits=5)


def test_grouped_folds_check_without_class_names_sees_every_class():
    labels, groups = _toy_groups()
    labels[:] = 1
    labels[np.isin(groups, ["img0", "img1"])] = 3  # class 3 in two images, class 0 absent
    with pytest.raises(ValueError, match="2 for '3'"):
        grouped_folds(labels, groups, n_splits=5)


# --- grouping by rock sample ------------------------------------------------------------------------

def _toy_dataset(n_samples: int = 8, images_per_sample: int = 4, per_image: int = 10, seed: int = 0,
                 with_samples: bool = True):
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    images = np.repeat([f"img{i}" for i in range(n_samples * images_per_sample)], per_image)
    samples = np.array([f"s{int(img[3:]) // images_per_sample}" for img in images]) if with_samples \
        else np.full(len(images), "", object)
    labels = rng.integers(0, 4, size=len(images))
    return SimpleNamespace(labels=labels, image_ids=images, sample_ids=samples, class_names=("a", "b", "c", "d"))


@pytest.mark.parametrize("group_by, column", [("sample", "sample_ids"), ("image", "image_ids")])
def test_no_group_falls_in_two_parts_of_a_fold(group_by, column):
    ds = _toy_dataset()
    groups = getattr(ds, column)
    folds = make_folds(ds, n_splits=4, seed=0, group_by=group_by, repeats=2)
    assert [f.index for f in folds] == list(range(8)) and [f.repeat for f in folds] == [0] * 4 + [1] * 4
    for fold in folds:
        train, val, test = (set(groups[p]) for p in (fold.train, fold.val, fold.test))
        assert val and not train & val and not train & test and not val & test
    for repeat in (folds[:4], folds[4:]):
        assert sorted(np.concatenate([f.test for f in repeat])) == list(range(len(ds.labels)))
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds[:4], folds[4:]))
    hold = make_folds(ds, seed=0, holdout=True, group_by=group_by)[0]
    parts = [set(groups[p]) for p in (hold.train, hold.val, hold.test)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]


def test_default_grouping_is_sample_where_the_data_allows_it_else_image():
    ds = _toy_dataset()
    assert resolve_grouping(ds, 5)[0] == "sample" and "8 rock samples" in resolve_grouping(ds, 5)[1]
    group_by, why = resolve_grouping(ds, 9)  # more folds than samples
    assert group_by == "image" and "rock samples (8)" in why
    group_by, why = resolve_grouping(_toy_dataset(with_samples=False), 5)
    assert group_by == "image" and "no rock sample" in why
    by_default = make_folds(ds, n_splits=5, seed=0)
    assert folds_hash(by_default) == folds_hash(make_folds(ds, n_splits=5, seed=0, group_by="sample"))
    assert folds_hash(by_default) != folds_hash(make_folds(ds, n_splits=5, seed=0, group_by="image"))


def test_impossible_grouping_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="--group-by sample is impossible here: the data records no rock sample"):
        resolve_grouping(_toy_dataset(with_samples=False), 5, "sample")
    with pytest.raises(ValueError, match=r"number of rock samples \(8\); got 9"):
        resolve_grouping(_toy_dataset(), 9, "sample")


def test_inner_folds_stay_inside_the_outer_training_part():
    ds = _toy_dataset()
    for outer in make_folds(ds, n_splits=4, seed=0, group_by="sample"):
        inner = inner_folds(ds, outer, 3, seed=0, group_by="sample")
        training = set(outer.train) | set(outer.val)
        assert len(inner) == 3
        assert sorted(np.concatenate([f.test for f in inner])) == sorted(training)
        for fold in inner:
            assert set(fold.train) | set(fold.val) | set(fold.test) <= training
            assert not set(ds.sample_ids[fold.test]) & set(ds.sample_ids[np.concatenate([fold.train, fold.val])])
