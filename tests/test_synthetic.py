"""The synthetic generator: deterministic, valid scene format, every instance labelled, safe CLI."""

import filecmp
import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from mcn.data.io import read_pixel_size
from mcn.data.synthetic import CLASSES, SceneConfig, default_dataset_dir, generate
from mcn.data.synthetic.cli import main

SMALL = dict(n_images=4, image_size=384, seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "a", **SMALL)


def test_same_seed_gives_byte_identical_files(small, tmp_path):
    again = generate(tmp_path / "b", **SMALL)
    names = ["crystals.csv", "images.csv", "synthetic.json", "README.md"]
    names += [f"{d}/{p.name}" for d in ("images", "masks", "ignore") for p in sorted((small / d).iterdir())]
    match, mismatch, errors = filecmp.cmpfiles(small, again, names, shallow=False)
    assert not mismatch and not errors and len(match) == len(names)


def test_other_seed_differs(tmp_path):
    tiny = dict(n_images=1, image_size=128)
    one, two = generate(tmp_path / "c0", seed=0, **tiny), generate(tmp_path / "c1", seed=1, **tiny)
    assert (one / "masks").iterdir().__next__().read_bytes() != (two / "masks").iterdir().__next__().read_bytes()


def test_scene_format_and_every_instance_labelled(small):
    crystals = pd.read_csv(small / "crystals.csv")
    images = pd.read_csv(small / "images.csv")
    assert list(crystals.columns[:4]) == ["image_id", "instance_id", "label", "sample_id"]
    assert {"true_label", "shape", "rounding", "visible_fraction", "equivalent_diameter_nm", "area_nm2",
            "touches_border"} <= set(crystals.columns)
    assert len(images) == 4 and (images.pixel_size_nm == 20.0).all()
    assert set(crystals.label) <= set(CLASSES)
    for image_id in images.image_id:
        image = tifffile.imread(small / "images" / f"{image_id}.tif")
        mask = tifffile.imread(small / "masks" / f"{image_id}.tif")
        assert image.dtype == np.uint8 and image.shape == (384, 384) and image.std() > 10
        assert mask.dtype == np.uint16 and mask.shape == (384, 384)
        rows = crystals[crystals.image_id == image_id]
        present = set(np.unique(mask)) - {0}
        assert present == set(rows.instance_id), "every mask instance has exactly one crystals.csv row"
        assert read_pixel_size(small / "images" / f"{image_id}.tif") == (20.0, "tiff")
    assert ((crystals.visible_fraction > 0) & (crystals.visible_fraction <= 1)).all()
    assert (crystals.area_nm2 > 0).all()
    assert (small / "contact_sheet.png").stat().st_size > 10_000
    assert json.loads((small / "synthetic.json").read_text())["n_crystals"] == len(crystals)


def test_all_four_classes_appear(tmp_path):
    out = generate(tmp_path / "d", n_images=6, image_size=256, seed=3, crystals_per_image=20)
    crystals = pd.read_csv(out / "crystals.csv")
    assert set(crystals.true_label) == set(CLASSES)
    assert crystals.groupby("image_id").size().between(5, 80).all()
    noisy = (crystals.label != crystals.true_label).mean()
    assert noisy < 0.15


def test_label_noise_knob(tmp_path):
    out = generate(tmp_path / "e", n_images=2, image_size=192, label_noise=0.0)
    crystals = pd.read_csv(out / "crystals.csv")
    assert (crystals.label == crystals.true_label).all()


def test_refuses_non_empty_folder(small, tmp_path, capsys):
    with pytest.raises(FileExistsError, match="not empty"):
        generate(small, **SMALL)
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(target), "--n-images", "1", "--image-size", "128"])
    assert exc.value.code != 0 and "--overwrite" in str(exc.value.code)
    assert (target / "notes.txt").read_text() == "keep me"
    main(["--out", str(target), "--n-images", "1", "--image-size", "128", "--overwrite"])
    assert (target / "notes.txt").read_text() == "keep me", "only the generator's own files are replaced"
    assert (target / "crystals.csv").is_file()
    assert "wrote 1 images" in capsys.readouterr().out


def test_overwrite_refuses_a_folder_holding_files_the_generator_did_not_write(tmp_path):
    small = ["--n-images", "1", "--image-size", "128"]
    user = tmp_path / "user"
    (user / "images").mkdir(parents=True)
    (user / "images" / "my_real_scan.tif").write_text("a real scan")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(user), *small, "--overwrite"])
    assert "not written by the generator" in str(exc.value.code) and "\n" not in str(exc.value.code)
    assert (user / "images" / "my_real_scan.tif").read_text() == "a real scan"

    own = tmp_path / "own"
    main(["--out", str(own), *small])
    (own / "images" / "my_real_scan.tif").write_text("added by hand")
    with pytest.raises(SystemExit, match="my_real_scan.tif: not written by the generator"):
        main(["--out", str(own), *small, "--seed", "1", "--overwrite"])
    assert (own / "images" / "my_real_scan.tif").read_text() == "added by hand"
    (own / "images" / "my_real_scan.tif").unlink()
    main(["--out", str(own), *small, "--seed", "1", "--overwrite"])  # its own outputs: replaced
    assert json.loads((own / "synthetic.json").read_text())["seed"] == 1


@pytest.mark.parametrize("knobs, message", [
    ({"label_noise": 1.5}, "label_noise"),
    ({"rounding": (0.3, 0.1)}, "rounding"),
    ({"class_proportions": (1, 0, 0)}, "class_proportions"),
    ({"n_samples": 0}, "n_samples"),
    ({"not_a_knob": 1}, "unknown synthetic knob"),
    ({"n_images": 0}, "n_images"),
    ({"image_size": 10}, "image_size"),
    ({"pixel_size_nm": -1.0}, "pixel_size_nm"),
])
def test_bad_knobs_are_refused_clearly(tmp_path, knobs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "x", **{**SMALL, **knobs})
    assert not (tmp_path / "x").exists()


def test_cli_reports_bad_knob_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "y"), "--label-noise", "2"])
    assert str(exc.value.code).startswith("error: `label_noise`")


def test_scene_config_documents_every_knob():
    from dataclasses import fields
    for f in fields(SceneConfig):
        assert f"  {f.name}:" in SceneConfig.__doc__, f"knob {f.name} is undocumented"


def test_default_dataset_dir_uses_cache_without_regenerating(tmp_path, monkeypatch, small):
    monkeypatch.setenv("MCN_CACHE", str(tmp_path))
    from mcn.data.synthetic.build import GENERATOR_VERSION
    from mcn.data.synthetic.build import GENERATOR_VERSION, OUTPUTS
    cached = tmp_path / f"synthetic-v{GENERATOR_VERSION}-seed0"
    cached.mkdir()
    for name in OUTPUTS:
        (cached / name).write_text("image_id,instance_id,label\n")
    assert default_dataset_dir() == cached
    assert (cached / "crystals.csv").read_text() == "image_id,instance_id,label\n"


def test_a_cache_written_before_ignore_masks_is_rebuilt_with_them(tmp_path, monkeypatch):
    import mcn.data.synthetic.build as build
    monkeypatch.setenv("MCN_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "generate", lambda out, seed: generate(out, seed=seed, n_images=1, image_size=128))
    cached = tmp_path / f"synthetic-v{build.GENERATOR_VERSION}-seed0"
    generate(cached, n_images=1, image_size=128)
    build.remove_own(cached, ["ignore"])
    assert default_dataset_dir() == cached
    assert len(list((cached / "ignore").iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [cached.name]  # no staging left behind


def test_ignore_masks_mark_the_visible_crystals_the_truth_leaves_out(small):
    """Crystals too occluded or cut by the edge are left out of the masks; a segmenter that finds
    them has found real crystals, and scoring must not charge it false positives."""
    from skimage.measure import label
    from mcn.data.scenes import iter_scenes
    from mcn.segment.metrics import pool_metrics, segmentation_metrics
    scenes = list(iter_scenes(small))
    assert all(s.ignore is not None and not (s.ignore & (s.labels > 0)).any() for s in scenes)
    assert sum(s.ignore.sum() for s in scenes) > 1000
    found_all = [np.where(s.labels > 0, s.labels, label(s.ignore) + s.labels.max() * s.ignore) for s in scenes]
    assert pool_metrics([segmentation_metrics(p, s.labels) for p, s in zip(found_all, scenes)])["precision"] < 0.95
    pooled = pool_metrics([segmentation_metrics(p, s.labels, ignore=s.ignore) for p, s in zip(found_all, scenes)])
    assert pooled["precision"] == 1.0 and pooled["n_ignored"] > 0


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import mcn.data.synthetic.build as build

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(build, "_contact_sheet", boom)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "z", n_images=1, image_size=128)
    assert list(tmp_path.iterdir()) == []
