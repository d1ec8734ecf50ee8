"""`python -m features.export`: sizes in nm against the generator's ground truth, pixel sizes from SEM
metadata, summaries, rock types, overlays, and the CLI's refusals."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from features.export import main
from features.pipeline import export
from mcn.data.io import read_image, read_labels, write_image
from mcn.segment.classical import ScaleWarning

SIZE_TOLERANCE = 0.01
"""Relative tolerance of exported sizes against the generator's ground truth for fully visible,
non-border crystals (measured: at most 1e-4 on the diameter, 0 on the area; the ground truth is the
rasterised projection, so only rounding of the recorded values remains)."""


@pytest.fixture(scope="module")
def scenes(tiny_scene_dir) -> Path:
    """The shared small synthetic scene set (conftest), with ground truth in crystals.csv."""
    return tiny_scene_dir


@pytest.fixture(scope="module")
def exported(scenes, tmp_path_factory) -> Path:
    """The synthetic scenes exported with their ground-truth masks and rock typing."""
    out = tmp_path_factory.mktemp("export") / "crystals.csv"
    main(["--images", str(scenes / "images"), "--masks", str(scenes / "masks"), "--out", str(out),
          "--rock-types", "2"])
    return out


def _error(argv: list[str], capsys) -> str:
    """Run the CLI expecting bad input: exit code 1 and one `error:` line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code not in (0, None)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_sizes_in_nm_match_the_generator_ground_truth(exported, scenes):
    crystals = pd.read_csv(exported)
    truth = pd.read_csv(scenes / "crystals.csv")
    merged = crystals.merge(truth, on=["image_id", "instance_id"], suffixes=("", "_truth"))
    assert len(merged) == len(crystals) == len(truth)
    assert (merged["touches_border"] == merged["touches_border_truth"]).all()
    assert (merged["pixel_size_nm"] == 20.0).all() and (merged["pixel_size_source"] == "images.csv").all()
    assert (merged["sample_id"] == merged["sample_id_truth"]).all()
    whole = merged[(merged["visible_fraction"] >= 0.999) & ~merged["touches_border"]]
    assert len(whole) >= 5
    np.testing.assert_allclose(whole["diameter_equivalent_nm"], whole["equivalent_diameter_nm"],
                               rtol=SIZE_TOLERANCE)
    np.testing.assert_allclose(whole["area_um2"] * 1e6, whole["area_nm2"], rtol=SIZE_TOLERANCE)
    np.testing.assert_allclose(merged["centroid_x_nm"], merged["centroid_x_px"] * 20.0)
    assert merged["occluded_likely"].isin([True, False]).all()


def test_summaries_overlays_and_rock_types_are_written_beside_the_table(exported):
    crystals = pd.read_csv(exported)
    images = pd.read_csv(exported.with_name("crystals_images.csv"))
    samples = pd.read_csv(exported.with_name("crystals_samples.csv"))
    assert len(images) == len(set(crystals["image_id"])) and images["n_crystals"].sum() == len(crystals)
    assert set(samples["sample_id"]) == set(crystals["sample_id"])
    first = images.iloc[0]
    complete = crystals[(crystals["image_id"] == first["image_id"]) & ~crystals["touches_border"]]
    assert first["n_measured"] == len(complete)
    assert first["diameter_equivalent_nm_d50"] == pytest.approx(complete["diameter_equivalent_nm"].median())
    assert first["diameter_equivalent_nm_d10"] < first["diameter_equivalent_nm_d50"] \
        < first["diameter_equivalent_nm_d90"]
    overlays = sorted(p.stem for p in exported.with_name("crystals_overlays").glob("*.png"))
    assert overlays == sorted(images["image_id"])
    types = pd.read_csv(exported.with_name("crystals_rocktypes.csv"))
    assert sorted(types["sample_id"]) == sorted(samples["sample_id"])
    assert set(types["rock_type"]) <= {1, 2}
    assert exported.with_name("crystals_rocktypes.png").stat().st_size > 0


def test_rock_types_more_than_samples_are_refused(scenes, tmp_path, capsys):
    n_samples = pd.read_csv(scenes / "images.csv")["sample_id"].nunique()
    message = _error(["--images", str(scenes / "images"), "--masks", str(scenes / "masks"),
                      "--out", str(tmp_path / "c.csv"), "--rock-types", str(n_samples + 1)], capsys)
    assert f"number of samples ({n_samples})" in message
    assert not list(tmp_path.iterdir())


def test_classical_segmenter_finds_a_plausible_number_of_crystals(scenes, tmp_path):
    out = tmp_path / "seg.parquet"
    main(["--images", str(scenes / "images"), "--out", str(out)])
    crystals = pd.read_parquet(out)
    truth = pd.read_csv(scenes / "crystals.csv")
    assert set(crystals["image_id"]) == set(truth["image_id"])
    assert 0.2 * len(truth) <= len(crystals) <= 2 * len(truth)  # touching crystals merge, occluded ones split
    assert crystals["diameter_equivalent_nm"].notna().all()


def _disc_scene(n: int = 96, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two bright discs (radius 12 and 16 px times `scale`) on a dark matrix, and their mask."""
    rr, cc = np.mgrid[:n, :n]
    labels = np.zeros((n, n), np.uint16)
    for k, (r, c, radius) in enumerate([(30, 30, 12 * scale), (60, 66, 16 * scale)], start=1):
        labels[(rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2] = k
    image = np.where(labels > 0, 200, 40).astype(np.uint8)
    return image, labels


def _zeiss_tiff(path: Path, pixels: np.ndarray, image_pixel_size: str) -> None:
    """CZ_SEM text as a Zeiss SEM writes it, with the monitor pixel size that must not be used."""
    text = ("0\r\n0\r\nAP_PIXEL_SIZE\r\nPixel Size = 456.7 nm\r\n"
            f"AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = {image_pixel_size}\r\nEND\r\n").encode("cp1252")
    tifffile.imwrite(path, pixels, extratags=[(34118, "B", len(text), text, True)])


def _fei_tiff(path: Path, pixels: np.ndarray, pixel_width_m: str) -> None:
    text = f"[User]\r\nDate=01/02/2024\r\n[Scan]\r\nPixelWidth={pixel_width_m}\r\nPixelHeight={pixel_width_m}\r\n"
    tifffile.imwrite(path, pixels, extratags=[(34682, "s", 0, text, True)])


def _small_scenes(root: Path, names: tuple[str, ...] = ("a", "b")) -> tuple[Path, Path]:
    """PNG images of two discs (smaller in each next image) with their masks; no pixel size recorded."""
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for k, name in enumerate(names):
        pixels, labels = _disc_scene(scale=1.0 - 0.1 * k)
        Image.fromarray(pixels).save(images / f"{name}.png")
        write_image(masks / f"{name}.tif", labels)
    return images, masks


def test_existing_export_is_never_silently_replaced(tmp_path, capsys):
    images, masks = _small_scenes(tmp_path)
    out = tmp_path / "c.csv"
    main(["--images", str(images), "--masks", str(masks), "--out", str(out), "--rock-types", "2"])
    before = out.read_bytes()
    argv = ["--images", str(images), "--masks", str(masks), "--out", str(out), "--pixel-size-nm", "5"]
    assert "--overwrite" in _error(argv, capsys)
    assert out.read_bytes() == before
    main([*argv, "--overwrite"])
    assert (pd.read_csv(out)["pixel_size_nm"] == 5).all()
    assert not (tmp_path / "c_rocktypes.csv").exists()  # stale: this run had no rock typing
    assert sorted(p.name for p in (tmp_path / "c_overlays").iterdir()) == ["a.png", "b.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


class _AreaClassifier:
    """Stands in for a Keras classifier (importing keras alone takes 10-30 s on this machine):
    "large" for crystals over 600 px, with the interface `export` uses."""

    class_names = ("small", "large")

    def predict_proba(self, crystals) -> np.ndarray:
        assert crystals.patches(16).shape == (len(crystals), 16, 16, 1)  # the training-crop path
        large = np.array([m.sum() > 600 for m in crystals.crop_masks], dtype=float)
        return np.stack([1 - large, large], axis=1)


def test_classifier_adds_classes_probabilities_and_class_fractions(tmp_path):
    images, masks = _small_scenes(tmp_path)
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    result = export(images, masks, classifier=_AreaClassifier(), overlay_dir=overlays)
    crystals = result.crystals.set_index(["image_id", "instance_id"])
    assert crystals.loc[("a", 1), "predicted_class"] == "small"  # radius 12: 450 px
    assert crystals.loc[("a", 2), "predicted_class"] == "large"  # radius 16: 800 px
    assert crystals.loc[("a", 2), ["probability_small", "probability_large"]].tolist() == [0.0, 1.0]
    assert result.images["fraction_large"].tolist() == [0.5, 0.5]
    assert result.samples.columns[-2:].tolist() == ["fraction_small", "fraction_large"]
    assert sorted(p.name for p in overlays.iterdir()) == ["a.png", "b.png"]


def test_zeiss_and_fei_pixel_sizes_come_from_metadata_and_unreadable_images_are_skipped(tmp_path, capsys):
    images, masks = _small_scenes(tmp_path, ("plain",))
    pixels, labels = _disc_scene()
    _zeiss_tiff(images / "zeiss.tif", pixels, "12.5 nm")
    _fei_tiff(images / "fei.tif", pixels, "2.5e-08")
    (images / "broken.tif").write_bytes(b"not a tiff")
    for name in ("zeiss", "fei", "broken"):
        write_image(masks / f"{name}.tif", labels)
    out = tmp_path / "c.csv"
    main(["--images", str(images), "--masks", str(masks), "--out", str(out), "--pixel-size-nm", "7"])
    captured = capsys.readouterr()
    assert "skipped broken.tif" in captured.err
    assert "1 image(s) skipped (broken.tif)" in captured.out
    crystals = pd.read_csv(out).set_index(["image_id", "instance_id"])
    scale = crystals.groupby("image_id")[["pixel_size_nm", "pixel_size_source"]].first()
    assert scale.loc["zeiss"].tolist() == [12.5, "zeiss"]
    assert scale.loc["fei"].tolist() == [pytest.approx(25.0), "fei"]
    assert scale.loc["plain"].tolist() == [7.0, "cli"]  # the flag only fills images without a size
    for image_id, nm in (("zeiss", 12.5), ("fei", 25.0), ("plain", 7.0)):
        row = crystals.loc[(image_id, 2)]
        assert row["diameter_equivalent_nm"] == pytest.approx(row["diameter_equivalent_px"] * nm)
        assert row["area_um2"] == pytest.approx(row["area_px"] * (nm / 1000) ** 2)
    assert set(crystals.index.get_level_values("image_id")) == {"zeiss", "fei", "plain"}


def test_ampis_powder_real_scene_without_pixel_size(tmp_path, ampis_dir):
    """A 512 x 512 corner of a real AMPIS scene (the whole set takes a minute on this CPU)."""
    source = sorted((ampis_dir / "images").glob("*.png"))[0]
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    image = read_image(source)[:512, :512]
    labels = read_labels(ampis_dir / "masks" / f"{source.stem}.tif")[:512, :512]
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(images / f"{source.stem}.png")
    write_image(masks / f"{source.stem}.tif", labels)
    main(["--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "a.csv")])
    crystals = pd.read_csv(tmp_path / "a.csv")
    assert len(crystals) == len(np.unique(labels[labels > 0]))
    assert (crystals["pixel_size_source"] == "unknown").all()
    assert crystals[["pixel_size_nm", "diameter_equivalent_nm", "area_um2", "centroid_x_nm"]].isna().all().all()
    assert crystals["diameter_equivalent_px"].notna().all()
    assert crystals["sample_id"].eq(source.stem).all()  # no images.csv: each image is its own sample
    main(["--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "b.parquet"),
          "--pixel-size-nm", "50"])
    scaled = pd.read_parquet(tmp_path / "b.parquet")
    assert (scaled["pixel_size_source"] == "cli").all()
    np.testing.assert_allclose(scaled["diameter_equivalent_nm"], scaled["diameter_equivalent_px"] * 50)


def test_bad_input_is_one_line_error(tmp_path, scenes, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images" in _error(["--images", str(empty), "--out", str(tmp_path / "c.csv")], capsys)
    assert ".csv or .parquet" in _error(["--images", str(scenes / "images"), "--out", str(tmp_path / "c.xlsx")],
                                        capsys)
    message = _error(["--images", str(scenes / "images"), "--out", str(tmp_path / "c.csv"),
                      "--segmenter", "sam", "--sam-checkpoint", str(tmp_path / "missing.pth")], capsys)
    assert "missing.pth" in message and "not found" in message
    assert "--sam-checkpoint" in _error(["--images", str(scenes / "images"), "--out", str(tmp_path / "c.csv"),
                                         "--segmenter", "sam"], capsys)
    assert "--preprocess" in _error(["--images", str(scenes / "images"), "--masks", str(scenes / "masks"),
                                     "--out", str(tmp_path / "c.csv"), "--preprocess"], capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.tif").write_bytes(b"not a tiff")
    assert "no image could be exported" in _error(
        ["--images", str(broken), "--masks", str(scenes / "masks"), "--out", str(tmp_path / "c.csv")], capsys)
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "c_overlays").exists()


def test_a_blank_image_is_skipped_counted_and_listed_in_the_summary_file(tmp_path, capsys):
    """Issue 12 item 10: one uniform image (threshold_multiotsu cannot split it) used to abort the export."""
    images, _ = _small_scenes(tmp_path)
    Image.fromarray(np.full((96, 96), 128, np.uint8)).save(images / "blank.png")
    out = tmp_path / "c.csv"
    main(["--images", str(images), "--out", str(out), "--quiet"])
    crystals = pd.read_csv(out)
    assert set(crystals["image_id"]) == {"a", "b"}
    assert "1 image(s) skipped (blank.png)" in capsys.readouterr().out
    summary = json.loads(out.with_name("c_summary.json").read_text())
    assert summary["n_images"] == 2 and summary["n_crystals"] == len(crystals)
    assert [s["file"] for s in summary["skipped"]] == ["blank.png"]
    assert "blank" in summary["skipped"][0]["reason"]


def _zeiss_with_data_bar(path: Path, store_rows: int | None, bar_rows: int = 40) -> None:
    """Two discs under a Zeiss-like data bar (black band, white text and scale bar), 20 nm pixels in
    CZ_SEM; with `store_rows`, the metadata records the micrograph's height (bar appended below)."""
    from PIL import ImageDraw, ImageFont

    pixels, _ = _disc_scene(n=160, scale=1.0)
    noise = np.random.default_rng(0).normal(0, 8, pixels.shape)  # a micrograph's rows are never flat
    pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(np.vstack([pixels, np.zeros((bar_rows, 160), np.uint8)]))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    draw.text((4, 162), "EHT 5 kV", fill=255, font=font)
    draw.text((4, 180), "50 KX", fill=255, font=font)
    draw.rectangle([110, 190, 150, 193], fill=255)
    store = f"DP_IMAGE_STORE\r\nStore resolution = 160 * {store_rows}\r\n" if store_rows else ""
    text = ("0\r\n0\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 20 nm\r\n" + store + "END\r\n").encode("cp1252")
    tifffile.imwrite(path, np.asarray(canvas), extratags=[(34118, "B", len(text), text, True)])


def test_the_data_bar_is_cropped_before_segmenting_and_reported(tmp_path, capsys):
    """Issue 13: the export segmented the instrument's data bar, its text became ~50 'crystals' per
    Zeiss image; the bar is now found (vendor metadata, else the image), cropped and reported."""
    images = tmp_path / "images"
    images.mkdir()
    _zeiss_with_data_bar(images / "in_frame.tif", store_rows=None)  # found from the image
    _zeiss_with_data_bar(images / "appended.tif", store_rows=160)  # found from the metadata
    out = tmp_path / "c.csv"
    main(["--images", str(images), "--out", str(out), "--quiet"])
    crystals = pd.read_csv(out)
    assert (crystals["centroid_y_px"] < 160).all()
    assert crystals.groupby("image_id").size().to_dict() == {"appended": 2, "in_frame": 2}
    summary = pd.read_csv(tmp_path / "c_images.csv").set_index("image_id")
    assert summary["data_bar_rows"].to_dict() == {"appended": 40, "in_frame": 40}
    assert (summary["pixel_size_source"] == "zeiss").all()
    printed = capsys.readouterr().out
    assert "data bar cropped from 2 image(s) (40-40 rows)" in printed and "2 image(s) from zeiss" in printed


def test_segmenter_warnings_name_the_image_and_are_kept_in_the_summary(tmp_path, capsys):
    """Issue 13: the size-range warning came out as a raw Python warning (the source line, no image
    name) through the progress bar; it is now one line naming the image, kept in the run summary."""
    images = tmp_path / "images"
    images.mkdir()
    _zeiss_with_data_bar(images / "z.tif", store_rows=160)  # 24-32 px discs at 20 nm: below 2 x 25 px
    out = tmp_path / "c.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)  # none may escape the export
        main(["--images", str(images), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert "z.tif: typical crystal" in captured.err and "ScaleWarning" not in captured.err
    notes = json.loads((tmp_path / "c_summary.json").read_text())["notes"]
    assert [n["file"] for n in notes] == ["z.tif"] and "default size range" in notes[0]["note"]
    assert "1 note(s) on 1 image(s); reasons in c_summary.json" in captured.out


def test_warnings_raised_before_an_images_error_are_still_reported(capsys):
    """An image skipped for an error keeps the segmenter's earlier warning, printed and in the notes."""
    import warnings

    from mcn.errors import DataError, warnings_as_notes

    notes = []
    with pytest.raises(DataError):
        with warnings_as_notes("img_007", notes):
            warnings.warn("typical crystal 30 px does not fit the default size range", UserWarning)
            raise DataError("img_007: nothing to segment")
    assert notes == [("img_007", "typical crystal 30 px does not fit the default size range")]
    assert "img_007: typical crystal 30 px" in capsys.readouterr().err
