"""The learned segmenter (`mcn.segment.learned`), its training command and its use in features.export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io

from features.export import main as export_main
from mcn.data.scenes import iter_scenes
from mcn.errors import DataError
from mcn.segment.learned import LearnedSegmenter
from mcn.segment.metrics import pool_metrics, segmentation_metrics
from mcn.segment.train import main as train_main

QUICK = dict(samples_per_class=4000, max_iter=40)
"""A small classifier: enough for the synthetic scenes, cheap enough for a test."""


@pytest.fixture(scope="module")
def scenes(tiny_scene_dir):
    return list(iter_scenes(tiny_scene_dir))


@pytest.fixture(scope="module")
def fitted(scenes) -> LearnedSegmenter:
    return LearnedSegmenter(**QUICK).fit([s.image for s in scenes[:4]], [s.labels for s in scenes[:4]])


def test_learned_segmenter_finds_the_held_out_crystals(fitted, scenes):
    held = scenes[4:]
    scores = pool_metrics([segmentation_metrics(fitted.segment(s.image), s.labels) for s in held])
    assert scores["iou"] > 0.85  # crystals vs matrix, pixel-wise
    assert scores["f1"] > 0.6, scores  # instances at IoU 0.5 on scenes it never saw
    labels = fitted.segment(held[0].image)
    assert labels.dtype == np.uint16 and labels.shape == held[0].image.shape


def test_pixel_classes_mark_the_rim_between_touching_crystals():
    labels = np.zeros((6, 8), np.uint16)
    labels[1:5, 1:4], labels[1:5, 4:7] = 1, 2
    target = LearnedSegmenter().pixel_classes(labels)
    assert (target[0] == 0).all() and target[2, 3] == 2 and target[2, 4] == 2  # the shared edge is boundary
    assert target[2, 2] == 1 and target[2, 5] == 1


def test_same_seed_same_model_and_save_load_round_trip(fitted, scenes, tmp_path):
    again = LearnedSegmenter(**QUICK).fit([s.image for s in scenes[:4]], [s.labels for s in scenes[:4]])
    image = scenes[4].image
    np.testing.assert_array_equal(fitted.predict_proba(image), again.predict_proba(image))
    loaded = LearnedSegmenter.load(fitted.save(tmp_path / "m.skops"))
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.segment(image), fitted.segment(image))


def test_model_files_with_foreign_types_or_content_are_refused(tmp_path):
    foreign = tmp_path / "foreign.skops"
    skops.io.dump({"format": "mcn-learned-segmenter", "version": 1, "params": {}, "classifier": print}, foreign)
    with pytest.raises(DataError, match="refused"):
        LearnedSegmenter.load(foreign)
    skops.io.dump({"format": "mcn-learned-segmenter", "version": 1, "params": {}, "classifier": np.add}, foreign)
    with pytest.raises(DataError, match="no fitted pixel classifier"):
        LearnedSegmenter.load(foreign)
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a saved learned segmenter"):
        LearnedSegmenter.load(junk)
    with pytest.raises(DataError, match="not found"):
        LearnedSegmenter.load(tmp_path / "missing.skops")


def test_train_command_reports_before_and_after_and_export_uses_the_model(tiny_scene_dir, tmp_path, capsys):
    model = tmp_path / "seg.skops"
    argv = ["--data", str(tiny_scene_dir), "--out", str(model), "--train-images", "4", "--max-iter", "40",
            "--quiet"]
    train_main(argv)
    out = capsys.readouterr().out
    assert "classical" in out and "learned" in out and "f1" in out
    report = json.loads(model.with_name("seg.skops.json").read_text())
    assert len(report["train_images"]) == 4 and len(report["heldout_images"]) == 2
    assert not set(report["train_images"]) & set(report["heldout_images"])
    assert 0 <= report["learned"]["f1"] <= 1 and report["classical"]["n_true"] == report["learned"]["n_true"]
    with pytest.raises(SystemExit, match="--overwrite"):
        train_main(argv)
    table = tmp_path / "c.csv"
    export_main(["--images", str(tiny_scene_dir / "images"), "--out", str(table), "--segmenter", "learned",
                 "--segmenter-model", str(model), "--quiet"])
    crystals = pd.read_csv(table)
    truth = pd.read_csv(tiny_scene_dir / "crystals.csv")
    assert 0.5 * len(truth) <= len(crystals) <= 1.5 * len(truth)
    assert json.loads(tmp_path.joinpath("c_summary.json").read_text())["segmenter"] == "learned"


def test_train_command_never_replaces_a_file_it_did_not_write(tiny_scene_dir, tmp_path):
    mine = tmp_path / "notes.skops"
    mine.write_text("my own notes")
    with pytest.raises(SystemExit, match="not a model this command wrote"):
        train_main(["--data", str(tiny_scene_dir), "--out", str(mine), "--overwrite", "--quiet"])
    assert mine.read_text() == "my own notes"
    with pytest.raises(SystemExit, match="--segmenter-model"):
        export_main(["--images", str(tiny_scene_dir / "images"), "--out", str(tmp_path / "c.csv"),
                     "--segmenter", "learned"])


def test_train_fits_and_scores_the_micrograph_above_the_data_bar(tiny_scene_dir, tmp_path, capsys):
    """Issue 13: training and its before/after scores used the whole image, data bar included (its
    text scored as crystals of both segmenters), and the classical size warning came out raw."""
    import shutil
    import warnings

    from mcn.data.io import write_image
    from mcn.segment.classical import ScaleWarning

    root = tmp_path / "bars"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shutil.copy(tiny_scene_dir / "images.csv", root / "images.csv")
    for scene in list(iter_scenes(tiny_scene_dir))[:3]:
        bar = np.zeros((40, scene.image.shape[1]), np.float32)  # black band, text-like marks, scale bar
        for col in range(10, scene.image.shape[1] // 2, 12):
            bar[10:22, col:col + 7] = 1.0
        bar[30:33, -120:-20] = 1.0
        write_image(root / "images" / f"{scene.image_id}.tif", np.vstack([scene.image, bar]), scene.pixel_size_nm)
        write_image(root / "masks" / f"{scene.image_id}.tif",
                    np.vstack([scene.labels, np.zeros((40, scene.labels.shape[1]), scene.labels.dtype)]))
    model = tmp_path / "seg.skops"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)  # none may escape as a raw warning
        train_main(["--data", str(root), "--out", str(model), "--train-images", "2", "--max-iter", "40", "--quiet"])
    report = json.loads(model.with_name("seg.skops.json").read_text())
    assert set(report["data_bar_rows"].values()) == {40}
    assert report["classical"]["precision"] > 0.5 and report["learned"]["precision"] > 0.5


def test_unannotated_crystals_are_not_learned_as_matrix():
    """A crystal the annotation leaves out (ignore mask) is not a sample of matrix: the model still
    finds such crystals instead of learning that half of the bright squares are background."""
    rng = np.random.default_rng(0)
    image = 0.1 + 0.02 * rng.standard_normal((96, 96))
    labels, ignore = np.zeros((96, 96), np.uint16), np.zeros((96, 96), bool)
    for k, (r, c) in enumerate([(8, 8), (8, 56), (56, 8), (56, 56)]):
        image[r:r + 30, c:c + 30] += 0.6
        if k % 2 == 0:
            labels[r:r + 30, c:c + 30] = k + 1
        else:
            ignore[r:r + 30, c:c + 30] = True
    image = np.clip(image, 0, 1).astype(np.float32)
    params = dict(samples_per_class=3000, max_iter=30, sigma_max=4.0)
    plain = LearnedSegmenter(**params).fit([image], [labels])
    aware = LearnedSegmenter(**params).fit([image], [labels], [ignore])
    assert (plain.segment(image)[ignore] > 0).mean() < 0.8
    assert (aware.segment(image)[ignore] > 0).mean() > 0.9
