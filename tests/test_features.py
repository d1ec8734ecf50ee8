"""Handcrafted morphometry against known geometry, and the classical model zoo on the suite's folds."""

import os
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, polygon
from sklearn.pipeline import Pipeline

from features.crossval import cross_validate_classifier, fit_predict_proba, training_index
from features.embeddings import feature_matrix, feature_names, fold_features
from features import morphometry
from features.importance import importance_table, plot_importance
from mcn.experiment.stats import mean_importance
from features.handcrafted import SHAPE_COLUMNS, SIZE_COLUMNS, handcrafted_features, resolve_size_features
from features.morphometry import (HANDCRAFTED_COLUMNS, PROPERTIES, morphometry_table,
                                  properties_table)
from features.zoo import create_classifier, list_classifiers
from mcn.data.dataset import CrystalDataset
from mcn.data.splits import grouped_folds
from mcn.errors import DataError
from mcn.metrics import metric_names

CLASSES = ("RES", "PES", "AA", "RA")


def disc_mask(radius: float, pad: int = 4) -> np.ndarray:
    size = int(2 * radius) + 2 * pad
    mask = np.zeros((size, size), bool)
    mask[disk((size / 2, size / 2), radius)] = True
    return mask


def polygon_mask(corners: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[polygon(corners[:, 0], corners[:, 1], mask.shape)] = True
    return mask


def regular_polygon(n: int, radius: float, size: int, turn_deg: float = 0.0) -> np.ndarray:
    angles = np.deg2rad(np.arange(n) * 360 / n + turn_deg)
    return polygon_mask(np.stack([size / 2 + radius * np.sin(angles), size / 2 + radius * np.cos(angles)], 1), size)


def faceted_crystal(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rhombohedron seen down its axis: a hexagon of three flat faces of different brightness."""
    centre, radius = size / 2, size * 0.42
    angles = np.deg2rad(np.arange(6) * 60 + 30)
    corners = np.stack([centre + radius * np.sin(angles), centre + radius * np.cos(angles)], 1)
    image, mask = np.zeros((size, size), np.float32), np.zeros((size, size), bool)
    for k, brightness in enumerate((0.35, 0.6, 0.85)):
        face = np.array([[centre, centre], corners[2 * k], corners[2 * k + 1], corners[(2 * k + 2) % 6]])
        rr, cc = polygon(face[:, 0], face[:, 1], image.shape)
        image[rr, cc], mask[rr, cc] = brightness, True
    image = np.clip(image + 0.03 * rng.standard_normal(image.shape), 0, 1) * mask
    return mask, image.astype(np.float32)


def rounded_crystal(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A sphere: smooth shading, no faces."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    r2 = (yy ** 2 + xx ** 2) / (size * 0.42) ** 2
    mask = r2 < 1
    image = 0.35 + 0.4 * np.sqrt(np.clip(1 - r2, 0, 1)) + 0.1 * xx / size
    image = np.clip(image + 0.03 * rng.standard_normal(image.shape), 0, 1) * mask
    return mask, image.astype(np.float32)


def toy_dataset(n_per_class: int = 6) -> CrystalDataset:
    """Faceted (RES, PES) and rounded (AA, RA) crystals of several sizes, 2 per source image."""
    rng = np.random.default_rng(0)
    crops, masks, labels = [], [], []
    for label in range(4):
        for i in range(n_per_class):
            size = 30 + 12 * i + 4 * label
            mask, image = (faceted_crystal if label < 2 else rounded_crystal)(size, rng)
            crops.append(image), masks.append(mask), labels.append(label)
    n = len(crops)
    return CrystalDataset(crops=crops, crop_masks=masks, labels=labels, class_names=CLASSES,
                          image_ids=[f"img{i // 2}" for i in range(n)], sample_ids=[""] * n,
                          pixel_size_nm=np.full(n, 20.0), pixel_size_source=["cli"] * n,
                          crystal_ids=[f"img{i // 2}/{i}" for i in range(n)], bboxes=-np.ones((n, 4)),
                          touches_border=np.arange(n) % 5 == 0)


# --- morphometry against known geometry -------------------------------------------------------------

def test_disc_is_round():
    row = morphometry_table([disc_mask(30)]).iloc[0]
    assert row["circularity"] == pytest.approx(1.0, abs=0.03)
    assert row["aspect_ratio_axes"] == pytest.approx(1.0, abs=0.02)
    assert row["aspect_ratio_feret"] == pytest.approx(1.0, abs=0.05)
    assert row["roundness"] == pytest.approx(1.0, abs=0.02)
    assert row["convexity"] == pytest.approx(1.0, abs=0.01) and row["solidity"] == pytest.approx(1.0, abs=0.01)
    assert row["diameter_equivalent_px"] == pytest.approx(60, rel=0.02)
    assert row["vertex_count"] >= 7  # no corners to find: the polygon stays many-sided
    assert not row["occluded_likely"]


def test_two_to_one_rectangle():
    mask = np.zeros((40, 60), bool)
    mask[5:25, 5:45] = True  # 20 x 40 pixels
    row = morphometry_table([mask]).iloc[0]
    assert row["aspect_ratio_feret"] == pytest.approx(2.0, rel=1e-6)
    assert row["aspect_ratio_axes"] == pytest.approx(2.0, rel=0.01)
    assert row["feret_min_px"] == pytest.approx(20.0)
    assert row["feret_max_px"] == pytest.approx(np.hypot(20, 40))
    assert row["vertex_count"] == 4
    assert row["corner_angle_mean_deg"] == pytest.approx(90.0, abs=1.0)
    assert row["area_px"] == 800 and row["extent"] == pytest.approx(1.0)
    assert abs(row["orientation_deg"]) == pytest.approx(90.0)  # long side along the columns


def test_rotated_rectangle_min_feret_by_rotating_calipers():
    angle = np.deg2rad(30)
    along, across = np.array([np.sin(angle), np.cos(angle)]), np.array([np.cos(angle), -np.sin(angle)])
    corners = 50 + np.array([s * 30 * along + t * 15 * across for s, t in ((-1, -1), (-1, 1), (1, 1), (1, -1))])
    row = morphometry_table([polygon_mask(corners, 100)]).iloc[0]
    assert row["feret_min_px"] == pytest.approx(30.0, abs=1.5)
    assert row["aspect_ratio_feret"] == pytest.approx(2.0, rel=0.06)
    assert row["vertex_count"] == 4


@pytest.mark.parametrize("turn", [0.0, 17.0])
def test_regular_hexagon_has_six_vertices(turn):
    row = morphometry_table([regular_polygon(6, 35, 90, turn)]).iloc[0]
    assert row["vertex_count"] == 6
    assert row["corner_angle_mean_deg"] == pytest.approx(120.0, abs=2.0)


def test_sizes_scale_with_the_pixel_size():
    mask = regular_polygon(5, 25, 64)
    table = morphometry_table([mask, mask, mask], pixel_size_nm=[10.0, 20.0, np.nan])
    small, large, unknown = table.iloc[0], table.iloc[1], table.iloc[2]
    assert small["area_um2"] == pytest.approx(small["area_px"] * 1e-4)
    assert large["area_um2"] == pytest.approx(4 * small["area_um2"])
    for name in ("perimeter", "diameter_equivalent", "axis_major_length", "axis_minor_length",
                 "feret_max", "feret_min"):
        assert large[f"{name}_nm"] == pytest.approx(2 * small[f"{name}_nm"])
        assert small[f"{name}_nm"] == pytest.approx(10 * small[f"{name}_px"])
        assert np.isnan(unknown[f"{name}_nm"])
    assert np.isnan(unknown["area_um2"])
    scale_free = [c for c in HANDCRAFTED_COLUMNS if c != "touches_border"]
    pd.testing.assert_series_equal(small[scale_free], large[scale_free], check_names=False)


def test_same_crystal_at_two_magnifications_measures_the_same():
    coarse, fine = morphometry_table([disc_mask(20), disc_mask(40)], pixel_size_nm=[20.0, 10.0]).iloc
    for column in ("area_um2", "perimeter_nm", "feret_max_nm", "diameter_equivalent_nm"):
        assert fine[column] == pytest.approx(coarse[column], rel=0.04)


def test_touches_border_is_passed_through_and_flagged():
    masks = [disc_mask(10), disc_mask(10)]
    table = morphometry_table(masks, touches_border=[True, False])
    assert table["touches_border"].tolist() == [True, False]
    assert morphometry_table(masks)["touches_border"].isna().all()  # unknown, not False
    assert "touches_border" not in handcrafted_features(toy_dataset(2)).columns  # in the export, not an input


def test_notched_crystal_is_likely_occluded():
    mask = disc_mask(30)
    mask[:34, 30:] = False  # a neighbour hides a quarter
    row = morphometry_table([mask]).iloc[0]
    assert row["occluded_likely"] and row["corner_concave_count"] >= 1


def test_facets_from_intensity():
    rng = np.random.default_rng(1)
    faceted = [faceted_crystal(size, rng) for size in (40, 90, 150)]
    rounded = [rounded_crystal(size, rng) for size in (40, 90, 150)]
    table = morphometry_table([m for m, _ in faceted + rounded], [i for _, i in faceted + rounded])
    assert table["facet_count"].tolist()[:3] == [3, 3, 3]
    assert (table["facet_count"][3:] < 3).all()  # smooth shading: at most a limb ring beside the cap
    assert (table["vertex_count"][:3] == 6).all()
    assert table["intensity_std"][:3].min() > table["intensity_std"][3:].max()


def test_empty_and_one_pixel_masks_give_nan_rows_and_one_clear_warning():
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    with pytest.warns(UserWarning, match=r"2 crystal mask\(s\) with fewer than 4 pixels \(rows 1, 2\)"):
        table = morphometry_table([disc_mask(8), one, np.zeros((6, 6), bool)],
                                  [np.ones((24, 24)), np.ones((5, 5)), np.ones((6, 6))], pixel_size_nm=5.0)
    assert table["area_px"].tolist() == [table["area_px"][0], 1, 0]
    assert table.loc[1:, ["circularity", "feret_min_px", "edge_density"]].isna().all().all()
    assert np.isfinite(table.loc[0, "circularity"])


def test_empty_input_gives_an_empty_typed_table():
    table = morphometry_table([])
    assert list(table.columns) == list(PROPERTIES) and len(table) == 0
    assert table["area_px"].dtype == "Int64" and table["touches_border"].dtype == "boolean"
    assert table["circularity"].dtype == np.float64


def test_registry_documents_every_column():
    table = morphometry_table([disc_mask(12)], [np.full((32, 32), 0.5)], pixel_size_nm=20.0)
    assert list(table.columns) == list(PROPERTIES)
    assert table.attrs["units"]["area_um2"] == "um^2" and table.attrs["units"]["feret_min_nm"] == "nm"
    docs = properties_table()
    assert docs["description"].str.len().min() > 10 and docs["unit"].ne("").all()
    assert not any(c.endswith(("_px", "_nm", "_um2")) or c == "orientation_deg" for c in HANDCRAFTED_COLUMNS)


@pytest.mark.parametrize("kwargs, message", [
    ({"images": [np.zeros((3, 3))]}, "image shape"),
    ({"pixel_size_nm": -1.0}, "must be positive"),
    ({"pixel_size_nm": [1.0, 2.0]}, "one per crystal"),
])
def test_bad_input_is_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(DataError, match=message):
        morphometry_table([disc_mask(5)], **kwargs)


def test_handcrafted_features_are_numeric_and_indexed_by_crystal():
    dataset = toy_dataset(3)
    features = handcrafted_features(dataset)
    assert list(features.columns) == [*SIZE_COLUMNS["nm"], *SHAPE_COLUMNS]
    assert (features.dtypes == np.float64).all()
    assert features.index.tolist() == dataset.crystal_ids.tolist()
    assert features.notna().all().all()


def test_size_is_a_classifier_input_and_border_contact_is_not():
    dataset = toy_dataset(3)
    features = handcrafted_features(dataset)  # every crystal has a pixel size: physical sizes
    assert {"area_um2", "axis_major_length_nm", "feret_max_nm"} <= set(features.columns)
    assert "touches_border" not in features.columns and "touches_border" in morphometry_table(dataset.crop_masks)
    np.testing.assert_allclose(features["axis_major_length_nm"],
                               20 * handcrafted_features(dataset, "px")["axis_major_length_px"])
    assert not set(handcrafted_features(dataset, "none").columns) & {*SIZE_COLUMNS["nm"], *SIZE_COLUMNS["px"]}


def test_size_mode_follows_the_pixel_sizes_the_data_has():
    dataset = toy_dataset(2)
    assert resolve_size_features(dataset)[0] == "nm"
    dataset.pixel_size_nm[:] = np.nan
    with pytest.warns(UserWarning, match="one magnification"):
        assert resolve_size_features(dataset)[0] == "px"
    with pytest.raises(ValueError, match="--size-features nm: 8 of 8 crystals have no pixel size"):
        resolve_size_features(dataset, "nm")
    dataset.pixel_size_nm[:4] = 20.0
    mode, why = resolve_size_features(dataset)
    assert mode == "none" and "only 4 of 8" in why


# --- the classical model zoo -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def separable():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    X = rng.normal(size=(120, 5)) + 4 * np.eye(4, 5)[y]
    X[rng.random(X.shape) < 0.05] = np.nan  # unmeasurable values, imputed inside the pipeline
    groups = np.arange(120) % 10
    return X, y, groups


def test_every_classifier_learns_and_predicts_all_classes(separable):
    X, y, _ = separable
    assert list_classifiers() == ["logreg", "svm_rbf", "random_forest", "extra_trees", "knn", "hist_gb", "xgboost"]
    train, test = np.arange(120) % 4 != 0, np.arange(120) % 4 == 0
    quick = {"random_forest": {"n_estimators": 40}, "extra_trees": {"n_estimators": 40},
             "xgboost": {"n_estimators": 40}}  # the defaults' size only costs test time
    for name in list_classifiers():
        pipeline = create_classifier(name)
        assert isinstance(pipeline, Pipeline) and list(pipeline.named_steps) == ["impute", "scale", "model"]
        proba, fit_seconds, predict_seconds = fit_predict_proba(name, X[train], y[train], X[test], 4,
                                                                **quick.get(name, {}))
        assert proba.shape == (30, 4) and np.allclose(proba.sum(axis=1), 1)
        assert (proba.argmax(axis=1) == y[test]).mean() > 0.8, name
        assert fit_seconds > 0 and predict_seconds > 0


def test_fixed_seed_gives_identical_probabilities(separable):
    X, y, _ = separable
    first = fit_predict_proba("extra_trees", X[::2], y[::2], X[1::2], 4, seed=3, n_estimators=30)[0]
    again = fit_predict_proba("extra_trees", X[::2], y[::2], X[1::2], 4, seed=3, n_estimators=30)[0]
    np.testing.assert_array_equal(first, again)


def test_a_class_missing_from_training_gets_zero_probability(separable):
    X, y, _ = separable
    keep = y != 2
    with pytest.warns(UserWarning, match=r"class\(es\) \[2\] absent from the training part"):
        proba = fit_predict_proba("xgboost", X[keep], y[keep], X, 4)[0]
    assert proba.shape == (120, 4) and (proba[:, 2] == 0).all() and np.allclose(proba.sum(axis=1), 1)


@pytest.mark.parametrize("change, message", [
    (lambda X, y: (X, np.zeros_like(y)), "holds 1 class"),
    (lambda X, y: (np.where(np.eye(120, 5, dtype=bool), np.inf, X), y), "infinite values in feature column"),
    (lambda X, y: (X[:, 0], y), "2-D"),
])
def test_unusable_training_data_fails_with_a_clear_message(separable, change, message):
    X, y = change(*separable[:2])
    with pytest.raises(ValueError, match=message):
        fit_predict_proba("logreg", X, y, separable[0], 4)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="choose from logreg"):
        create_classifier("boosted_unicorn")
    with pytest.raises(ValueError, match="no parameter"):
        create_classifier("logreg", depth=3)
    assert create_classifier("logreg", C=10.0).named_steps["model"].C == 10.0


def test_cross_validation_on_grouped_folds(separable):
    X, y, groups = separable
    folds = grouped_folds(y, groups, n_splits=3, seed=0, class_names=CLASSES)
    results = cross_validate_classifier("logreg", X, y, folds, CLASSES)
    assert [r["fold"] for r in results] == [0, 1, 2]
    for r, fold in zip(results, folds):
        assert list(r["metrics"]) == metric_names(CLASSES) and r["metrics"]["top1"] > 0.8
        np.testing.assert_array_equal(r["test_index"], fold.test)
        assert r["probabilities"].shape == (len(fold.test), 4) and r["n_train"] == len(training_index(fold))
    via_callable = cross_validate_classifier("logreg", lambda fold: X, y, folds, CLASSES)
    via_tuple = cross_validate_classifier("logreg", lambda f: (X[training_index(f)], X[f.test]), y, folds, CLASSES)
    in_parallel = cross_validate_classifier("logreg", X, y, folds, CLASSES, n_jobs=2)
    assert [r["fold"] for r in in_parallel] == [0, 1, 2]
    for a, b, c, d in zip(results, via_callable, via_tuple, in_parallel):
        np.testing.assert_allclose(a["probabilities"], b["probabilities"])
        np.testing.assert_allclose(a["probabilities"], c["probabilities"])
        np.testing.assert_allclose(a["probabilities"], d["probabilities"])


def test_feature_sets_use_each_folds_own_embeddings(separable):
    X, y, groups = separable
    folds = grouped_folds(y, groups, n_splits=2, seed=0, class_names=CLASSES)
    embeddings = {0: np.zeros((120, 3)), 1: np.ones((120, 3))}
    hybrid = fold_features("hybrid", X, embeddings)
    np.testing.assert_array_equal(hybrid(folds[1])[:, 5:], 1.0)
    assert feature_matrix("embedding", embeddings=embeddings[0]).shape == (120, 3)
    assert feature_names("hybrid", ["a", "b"], 2) == ["a", "b", "emb_000", "emb_001"]
    with pytest.raises(ValueError, match="no CNN embeddings for fold 1"):
        fold_features("embedding", X, {0: embeddings[0]})(folds[1])
    with pytest.raises(ValueError, match="needs embeddings"):
        feature_matrix("hybrid", X)


def test_importance_ranks_the_informative_feature_first(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    X = rng.normal(size=(90, 4))
    X[:, 2] += 4 * y
    names = ["noise_a", "noise_b", "signal", "noise_c"]
    train, test = np.arange(90) % 3 != 0, np.arange(90) % 3 == 0
    tables = [importance_table(X[train], y[train], X[test], y[test], names, seed=seed, n_repeats=3)
              for seed in (0, 1)]
    assert tables[0]["feature"][0] == "signal" and tables[0]["gain_share"].sum() == pytest.approx(1.0)
    table = mean_importance(tables)
    assert table["feature"][0] == "signal" and set(table["feature"]) == set(names)
    path = plot_importance(table, tmp_path / "importance.png")
    assert path.stat().st_size > 5000 and not list(tmp_path.glob(".*"))


def test_fold_importances_spread_is_the_suites_sample_std():
    """Every spread of the suite is the sample std (ddof=1); the importance table's was ddof=0."""
    folds = [pd.DataFrame({"feature": ["a", "b"], "gain_share": [g, 1 - g], "permutation_mean": [p, 0.0],
                           "permutation_std": [0.0, 0.0]}) for g, p in ((0.6, 0.1), (0.8, 0.3), (0.7, 0.2))]
    table = mean_importance(folds).set_index("feature")
    assert table.loc["a", "permutation_mean"] == pytest.approx(0.2)
    assert table.loc["a", "permutation_std"] == pytest.approx(0.1)  # sqrt(0.02 / 2); ddof=0 gave 0.0816
    assert table.loc["a", "gain_share"] == pytest.approx(0.7) and table.loc["b", "permutation_std"] == 0
    assert list(table.index) == ["a", "b"]


def test_handcrafted_features_separate_faceted_from_rounded_crystals():
    dataset = toy_dataset(6)
    X = handcrafted_features(dataset).to_numpy()
    faceted = (dataset.labels < 2).astype(int)
    folds = grouped_folds(faceted, dataset.image_ids, n_splits=3, seed=0, class_names=("round", "faceted"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in the features should upset scikit-learn
        results = cross_validate_classifier("logreg", X, faceted, folds, ("round", "faceted"))
    assert np.mean([r["metrics"]["top1"] for r in results]) > 0.9


def test_worker_processes_give_the_same_table(monkeypatch):
    monkeypatch.setattr(morphometry, "PARALLEL_CHUNK", 10)
    rng = np.random.default_rng(2)
    crystals = [(faceted_crystal if i % 2 else rounded_crystal)(30 + i % 7 * 5, rng) for i in range(40)]
    masks, images = [m for m, _ in crystals], [i for _, i in crystals]
    pd.testing.assert_frame_equal(morphometry_table(masks, images, 20.0, n_jobs=2),
                                  morphometry_table(masks, images, 20.0))


def test_fold_embeddings_of_another_split_are_refused(tmp_path):
    from features.embeddings import load_fold_embeddings
    from mcn.data.splits import make_folds
    from mcn.train import FoldResult, split_hash

    dataset = toy_dataset(12)
    dataset.sample_ids[:] = [f"s{(i // 2) % 6}" for i in range(len(dataset))]
    by_image = make_folds(dataset, n_splits=2, seed=0, group_by="image")
    for fold in by_image:
        FoldResult(fold.index, "microcrystalnet", fold.test, dataset.labels[fold.test],
                   np.full((len(fold.test), 4), 0.25, np.float32), np.zeros((len(dataset), 3), np.float32), {}, {},
                   1, 0, 1.0, 1.0, 1e-3, 10, 10, "model.keras", "torch", 24, CLASSES, {}, {}, "c",
                   dataset.fingerprint(), split_hash(fold)).save(tmp_path / f"fold_{fold.index}")
        (tmp_path / f"fold_{fold.index}" / "model.keras").touch()  # a fold folder holds its model
    assert set(load_fold_embeddings(tmp_path, len(dataset), by_image, dataset.fingerprint())) == {0, 1}
    for other in (make_folds(dataset, n_splits=2, seed=1, group_by="image"),
                  make_folds(dataset, n_splits=2, seed=0, group_by="sample"),
                  make_folds(dataset, n_splits=3, seed=0, group_by="image")):
        with pytest.raises(DataError, match="another split|no embeddings for fold 2"):
            load_fold_embeddings(tmp_path, len(dataset), other, dataset.fingerprint())
    with pytest.raises(DataError, match="another data set"):
        load_fold_embeddings(tmp_path, len(dataset), by_image, "0" * 16)


def test_thin_mask_that_vanishes_at_the_texture_size_gets_nan_texture_not_a_crash():
    """Issue 12 item 11: a 1-pixel-thin crystal 180 px long has no pixel left at the texture size."""
    thin = np.zeros((3, 200), bool)
    thin[1, 10:190] = True
    image = np.random.default_rng(0).random((3, 200)).astype(np.float32)
    disc = disc_mask(10)
    with pytest.warns(UserWarning, match=r"1 crystal mask\(s\) too thin .* texture size \(rows 0\)"):
        table = morphometry_table([thin, disc], [image, np.full(disc.shape, 0.5, np.float32)])
    thin_row, disc_row = table.iloc[0], table.iloc[1]
    assert thin_row["area_px"] == 180 and thin_row["feret_max_px"] == pytest.approx(np.hypot(1, 180))
    assert thin_row["intensity_mean"] == pytest.approx(image[thin].mean())
    assert thin_row[["edge_density", "glcm_contrast", "lbp_entropy"]].isna().all() and pd.isna(thin_row["facet_count"])
    assert np.isfinite(disc_row["edge_density"]) and np.isfinite(disc_row["glcm_contrast"])


def test_a_property_selection_computes_only_those_columns_with_the_same_values():
    rng = np.random.default_rng(3)
    crystals = [faceted_crystal(40, rng), rounded_crystal(50, rng)]
    masks, images = [m for m, _ in crystals], [i for _, i in crystals]
    full = morphometry_table(masks, images, 20.0)
    chosen = ["feret_min_nm", "area_px", "solidity"]
    table = morphometry_table(masks, images, 20.0, properties=chosen)
    assert list(table.columns) == ["area_px", "feret_min_nm", "solidity"]  # table order, as PROPERTIES
    pd.testing.assert_frame_equal(table, full[list(table.columns)], check_like=False)
    assert list(morphometry_table(masks, properties=["glcm_energy"]).columns) == ["glcm_energy"]
    with pytest.raises(DataError, match="unknown morphometry properties"):
        morphometry_table(masks, properties=["sharpness"])


def test_texture_patch_is_the_area_average_of_the_padded_square_crop():
    """The texture patch is the crop centred on a zero-padded square and shrunk by area averaging,
    as OpenCV's INTER_AREA: for a whole shrink factor each patch pixel is the mean of its block of
    the square, and the mask is sampled at the patch pixel centres; wide, tall, thin and square
    crops, masks filling the crop or a part of it (the patch is computed where the mask is)."""
    import cv2

    from features.texture import TEXTURE_SIZE, texture_sample

    rng = np.random.default_rng(4)
    for shape in [(300, 170), (90, 400), (9, 200), (60, 60), (144, 97), (49, 7)]:
        for part in (slice(None), slice(shape[0] // 5, shape[0] - shape[0] // 4)):
            image = rng.random(shape).astype(np.float32)
            mask = np.zeros(shape, bool)
            mask[part, shape[1] // 3:] = rng.random(shape)[part, shape[1] // 3:] < 0.9
            side = max(shape)
            pad = [((side - n) // 2, side - n - (side - n) // 2) for n in shape]
            square, square_mask = np.pad(image, pad), np.pad(mask, pad)
            patch, inside = texture_sample(image, mask)
            centres = ((np.arange(TEXTURE_SIZE) + 0.5) * side / TEXTURE_SIZE).astype(int)
            assert np.array_equal(inside, square_mask[np.ix_(centres, centres)])
            expected = cv2.resize(square, (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_AREA)
            np.testing.assert_allclose(patch[inside], expected[inside], rtol=1e-5, atol=1e-6)
            if side % TEXTURE_SIZE == 0:
                k = side // TEXTURE_SIZE
                blocks = square.reshape(TEXTURE_SIZE, k, TEXTURE_SIZE, k).mean(axis=(1, 3))
                np.testing.assert_allclose(patch[inside], blocks[inside], rtol=1e-5, atol=1e-6)


def test_texture_is_the_same_at_two_magnifications():
    """A crystal imaged at 2 and 3 times the magnification (each pixel becomes a k x k block) gives
    the same texture patch, so the same texture columns."""
    rng = np.random.default_rng(8)
    mask, image = faceted_crystal(64, rng)
    masks = [mask] + [np.kron(mask, np.ones((k, k), bool)) for k in (2, 3)]
    images = [image] + [np.kron(image, np.ones((k, k), np.float32)) for k in (2, 3)]
    table = morphometry_table(masks, images, properties=list(morphometry.TEXTURE_COLUMNS))
    assert table.notna().all().all()
    for k in (1, 2):
        pd.testing.assert_series_equal(table.iloc[k], table.iloc[0], check_names=False, rtol=1e-4, atol=1e-4)


def test_intensity_columns_equal_numpys_mean_and_std():
    """Computed without numpy's wrappers for speed; the float32 mean and std must stay numpy's to the bit."""
    from features.texture import intensity_features

    rng = np.random.default_rng(10)
    for size in (1, 2, 7, 100, 1000, 40000):
        image = (rng.random((1, size)) ** rng.uniform(0.2, 3)).astype(np.float32)
        mask = np.ones(image.shape, bool)
        mask[0, ::3] = size == 1
        values = intensity_features(image, mask)
        assert values == {"intensity_mean": float(image[mask].mean()), "intensity_std": float(image[mask].std())}


def test_edge_map_is_the_sobel_magnitude_of_the_smoothed_patch():
    """The stacked OpenCV edge map equals scikit-image's Sobel of scipy's Gaussian (sigma 1) per
    patch, wherever the magnitude is not within float32 rounding of the threshold."""
    from scipy import ndimage as ndi
    from skimage.filters import sobel

    from features.texture import EDGE_THRESHOLD, edge_map

    rng = np.random.default_rng(9)
    stack = np.cumsum(rng.standard_normal((150, 20, 24)), 2)  # more patches than one OpenCV call takes
    stack = ((stack - stack.min()) / np.ptp(stack)).astype(np.float32) * 4 % 1
    interior = rng.random(stack.shape) < 0.8
    magnitude = np.stack([sobel(ndi.gaussian_filter(patch.astype(np.float64), 1.0)) for patch in stack])
    clear = np.abs(magnitude - EDGE_THRESHOLD) > 1e-5
    edges = edge_map(stack, interior)
    assert np.array_equal(edges[clear], ((magnitude > EDGE_THRESHOLD) & interior)[clear])
    assert 0.2 < edges.mean() < 0.6 and clear.mean() > 0.99


def test_outline_smoothing_at_the_grid_points_equals_filtering_the_whole_mask():
    """The outline grid is smoothed only where it is traced; that must equal scipy's Gaussian
    filter of the whole mask with zeros beyond it, at any rows and columns, inside or beyond it."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(4)
    for shape, sigma in [((30, 17), 1.0), ((9, 40), 2.5), ((1, 12), 1.0), ((25, 25), 4.0)]:
        box = rng.random(shape) < 0.7
        for rows, cols in [(range(-6, shape[0] + 6, 2), range(-7, shape[1] + 7, 3)),
                           (range(shape[0] // 2, shape[0] + 3), range(-20, -3, 4))]:  # partly inside; wholly beyond
            margin = 24 + int(4 * sigma + 0.5)
            expected = ndi.gaussian_filter(np.pad(box.astype(np.float64), margin), sigma, mode="constant")
            np.testing.assert_allclose(morphometry._gaussian_sample(box, rows, cols, sigma),
                                       expected[np.ix_(np.array(rows) + margin, np.array(cols) + margin)],
                                       rtol=1e-12, atol=1e-15)


def test_solid_mask_fills_holes_and_keeps_the_largest_8_connected_component():
    from scipy import ndimage as ndi

    from mcn.data.patches import solid_mask

    rng = np.random.default_rng(5)
    for threshold in (0.3, 0.5, 0.7):
        for _ in range(10):
            mask = rng.random((40, 50)) > threshold
            filled = ndi.binary_fill_holes(mask)
            components, n = ndi.label(filled, structure=np.ones((3, 3), bool))
            expected = filled if n <= 1 else components == 1 + np.argmax(np.bincount(components.ravel())[1:])
            assert np.array_equal(solid_mask(mask), expected)
    assert not solid_mask(np.zeros((5, 5), bool)).any()


def test_ellipse_columns_equal_regionprops():
    """The moment ellipse is computed from OpenCV's moments for speed, with regionprops' meaning:
    axes, eccentricity and orientation (sign convention, and -45 deg for isotropic masks) equal
    scikit-image's on random blobs, lines, diagonals, squares and discs."""
    from skimage.measure import regionprops

    from mcn.data.patches import solid_mask

    rng = np.random.default_rng(6)
    masks = [solid_mask(rng.random((int(rng.integers(3, 60)), int(rng.integers(3, 60)))) < rng.uniform(0.5, 0.9))
             for _ in range(60)]
    masks += [regular_polygon(n, 15, 40, turn) for n in (3, 4, 6) for turn in (0, 10, 45)]
    masks += [np.ones((7, 7), bool), disc_mask(9.5), np.ones((1, 9), bool), np.ones((9, 1), bool),
              np.eye(8, dtype=bool), np.eye(8, dtype=bool)[::-1], np.ones((6, 20), bool)]
    masks = [m for m in masks if m.sum() >= morphometry.MIN_AREA_PX]
    columns = ["axis_major_length_px", "axis_minor_length_px", "eccentricity", "orientation_deg"]
    table = morphometry_table(masks, properties=columns)
    expected = [[r.axis_major_length, r.axis_minor_length, r.eccentricity, np.degrees(r.orientation)]
                for r in (regionprops(solid_mask(m).astype(np.uint8))[0] for m in masks)]
    np.testing.assert_allclose(table[columns].to_numpy(), np.array(expected), rtol=1e-9, atol=1e-6)


def test_stacked_lbp_and_glcm_equal_scikit_image_per_patch():
    """The texture columns' LBP codes and co-occurrences are computed on the whole stack of patches
    at once; every code and count must equal scikit-image's per-patch result (ties included)."""
    from skimage.feature import graycomatrix, local_binary_pattern

    from features.texture import GLCM_LEVELS, glcm, uniform_lbp

    rng = np.random.default_rng(7)
    smooth = np.cumsum(np.cumsum(rng.standard_normal((6, 48, 48)), 1), 2)  # gentle gradients: many ties
    smooth = np.round((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
    for stack in (rng.integers(0, 256, (6, 48, 48)).astype(np.uint8), rng.integers(0, 3, (6, 48, 48)).astype(np.uint8),
                  smooth, rng.integers(0, 256, (3, 7, 13)).astype(np.uint8)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.stack([local_binary_pattern(patch, 8, 1, "uniform") for patch in stack])
        np.testing.assert_array_equal(uniform_lbp(stack), expected)
        levels = stack % (GLCM_LEVELS + 1)
        expected = np.concatenate([graycomatrix(patch, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                                                levels=GLCM_LEVELS + 1, symmetric=True)[1:, 1:] for patch in levels], 2)
        np.testing.assert_array_equal(glcm(levels), expected)


def test_batched_contours_equal_find_contours():
    """The outline columns trace all grids of a chunk at once; each traced contour must equal
    scikit-image's `find_contours` point for point (same start, direction and bits), and the grids
    it cannot stand in for (several contours, open at the border, a value exactly at the level,
    none) must be handed back as None rather than traced differently."""
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    from features.contours import closed_contours

    rng = np.random.default_rng(3)
    grids = []
    for size in rng.integers(10, 70, 60):
        blob = np.zeros((size, size + rng.integers(-3, 4)))
        blob[3:-3, 3:-3] = rng.random((blob.shape[0] - 6, blob.shape[1] - 6)) < rng.uniform(0.5, 0.9)
        grids.append(ndi.gaussian_filter(blob, rng.uniform(1.0, 2.0), mode="constant").astype(np.float32))
    saddle = np.zeros((7, 7), np.float32)  # a hook whose tip meets its root across a saddle cell
    saddle[[2, 1, 1, 1, 2, 3, 3], [2, 2, 3, 4, 4, 4, 3]] = 1.0
    two = np.zeros((8, 12), np.float32)
    two[2:5, 2:4] = two[2:5, 7:10] = 1.0
    open_at_border = np.zeros((8, 8), np.float32)
    open_at_border[0:4, 2:5] = 1.0
    at_level = np.zeros((8, 8), np.float32)
    at_level[3:5, 3:5] = 1.0
    at_level[2, 3] = 0.5
    grids += [saddle, saddle.T.copy(), two, open_at_border, at_level, np.zeros((5, 5), np.float32),
              open_at_border]  # an empty grid above one open at its top: no contour is lent to it
    traced = closed_contours(grids, 0.5)
    assert traced[-7] is not None and traced[-6] is not None  # cases 9 and 6 inside one contour
    assert all(t is None for t in traced[-5:])
    used = 0
    for grid, contour in zip(grids, traced):
        expected = find_contours(grid, 0.5)
        single = len(expected) == 1 and np.array_equal(expected[0][0], expected[0][-1]) and not (grid == 0.5).any()
        assert (contour is not None) == single
        if contour is not None:
            np.testing.assert_array_equal(contour, expected[0])
            used += 1
    assert used >= 30


def _fail_in_forked_processes(monkeypatch, fail) -> None:
    """Make `_measure` call `fail()` in any process but this one (a forked worker's failure); this
    one waits for that, so a worker surely takes a chunk before this one has measured them all."""
    import multiprocessing

    parent, measure = os.getpid(), morphometry._measure
    failing = multiprocessing.get_context("fork").Event()

    def measure_or_fail(*args):
        if os.getpid() == parent:
            assert failing.wait(60), "no worker process took a chunk"
            return measure(*args)
        failing.set()
        return fail()

    monkeypatch.setattr(morphometry, "PARALLEL_CHUNK", 10)
    monkeypatch.setattr(morphometry, "_measure", measure_or_fail)


def test_a_failure_in_a_worker_process_is_raised_in_the_caller(monkeypatch):
    def fail():
        raise ValueError("broken crystal")

    _fail_in_forked_processes(monkeypatch, fail)
    masks = [disc_mask(6.0 + i % 5) for i in range(60)]
    with pytest.raises(ValueError, match="broken crystal"):
        morphometry_table(masks, n_jobs=2)


def test_a_worker_process_that_dies_is_an_error_not_a_hang(monkeypatch):
    _fail_in_forked_processes(monkeypatch, lambda: os._exit(3))
    masks = [disc_mask(6.0 + i % 5) for i in range(60)]
    with pytest.raises(RuntimeError, match="worker process died"):
        morphometry_table(masks, n_jobs=2)


def test_feret_columns_equal_brute_force_over_the_pixel_corners():
    """Feret diameters by rotating calipers on the hull equal a brute-force search over every pixel
    corner of the solid mask: the largest corner-to-corner distance, and the narrowest width over
    all directions normal to a pair of corners (the narrowest is normal to a hull side), with its
    perpendicular extent; on blobs with holes, islands and several bodies as well as solid ones."""
    from mcn.data.patches import solid_mask

    rng = np.random.default_rng(11)
    masks = [ndi_blob(rng, (int(rng.integers(6, 14)), int(rng.integers(6, 14))), fill) for fill in
             rng.uniform(0.35, 0.9, 40)]
    masks += [np.ones((1, 9), bool), np.eye(7, dtype=bool), regular_polygon(5, 6, 16, 10)]
    masks = [m for m in masks if solid_mask(m).sum() >= morphometry.MIN_AREA_PX]
    table = morphometry_table(masks, properties=["feret_max_px", "feret_min_px", "aspect_ratio_feret"])
    for mask, (_, row) in zip(masks, table.iterrows()):
        rows, cols = np.nonzero(solid_mask(mask))
        corners = np.unique(np.concatenate([np.stack([rows + dr, cols + dc], 1)
                                            for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)]), axis=0)
        pairs = corners[:, None] - corners[None]
        assert row["feret_max_px"] == pytest.approx(np.sqrt((pairs ** 2).sum(-1)).max(), rel=1e-12)
        sides = pairs.reshape(-1, 2)[(pairs.reshape(-1, 2) ** 2).sum(1) > 0]
        sides = sides / np.sqrt((sides ** 2).sum(1))[:, None]
        across = corners @ np.stack([sides[:, 1], -sides[:, 0]])
        widths = across.max(0) - across.min(0)
        k = widths.argmin()
        along = corners @ sides[k]
        assert row["feret_min_px"] == pytest.approx(widths[k], rel=1e-12)
        assert row["aspect_ratio_feret"] == pytest.approx((along.max() - along.min()) / widths[k], rel=1e-9)


def ndi_blob(rng: np.random.Generator, shape: tuple[int, int], fill: float) -> np.ndarray:
    """A random blob: noise smoothed and cut, so it may have holes, islands and several bodies."""
    from scipy import ndimage as ndi

    noise = ndi.gaussian_filter(rng.random((shape[0] + 4, shape[1] + 4)), 1.0)
    return noise > np.quantile(noise, 1 - fill)


class _Unpicklable(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.lock = threading.Lock()  # no pickle takes it


class _NotRebuilt(Exception):
    def __init__(self, code: int, why: str):  # its pickle calls it with one argument
        super().__init__(f"{why} ({code})")


@pytest.mark.parametrize("error", [lambda: _Unpicklable("odd crystal"), lambda: _NotRebuilt(7, "odd crystal")])
def test_a_worker_failure_that_does_not_pickle_is_still_raised_in_the_caller(monkeypatch, error):
    def fail():
        raise error()

    _fail_in_forked_processes(monkeypatch, fail)
    with pytest.raises(Exception, match="odd crystal"):
        morphometry_table([disc_mask(6.0 + i % 5) for i in range(60)], n_jobs=2)
