"""Tests of the model zoo: registry, MicroCrystalNet's NSR block, baselines, FLOPs, saving."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from mcn.errors import DataError
from mcn.models import (
    count_flops,
    create_model,
    embedding_model,
    list_models,
    model_defaults,
    prepare_model,
    selected_features,
)

REPO = Path(__file__).resolve().parents[1]
MODELS = ("densenet121", "efficientnetb0", "inceptionv3", "microcrystalnet", "resnet50", "vgg16")


def _patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 1), dtype=np.float32)


def _tiny_mcn(**hparams) -> keras.Model:
    """MicroCrystalNet at its smallest input (16 px -> 128 stem features) with a small PCA."""
    return create_model("microcrystalnet", (16, 16, 1), **{"pca_dim": 8, **hparams})


def _submodel(model: keras.Model, layer: str) -> keras.Model:
    return keras.Model(model.inputs, model.get_layer(layer).output)


def test_registry_lists_the_six_models():
    assert tuple(list_models()) == MODELS
    assert model_defaults("microcrystalnet").input_shape == (64, 64, 1)
    assert model_defaults("inceptionv3").min_input_size == 75
    assert model_defaults("microcrystalnet").hparams["pca_dim"] == 128


TENSORFLOW_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import keras
    from mcn.models import create_model, prepare_model
    assert keras.backend.backend() == "tensorflow"
    x = np.random.default_rng(0).random((8, 16, 16, 1), dtype=np.float32)
    model = prepare_model(create_model("microcrystalnet", (16, 16, 1), pca_dim=4), x)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.fit(x, np.arange(8) % 4, batch_size=4, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)
    print("ok")
    """
)


@pytest.fixture(scope="module", autouse=True)
def tensorflow_run(request):
    """Start the TensorFlow check first (when selected): its slow import overlaps the torch tests."""
    if not any(item.name == "test_microcrystalnet_trains_on_tensorflow" for item in request.session.items):
        yield None
        return
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-c", TENSORFLOW_SCRIPT],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    process.kill()
    process.communicate()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_one_step_at_its_smallest_size(name):
    size = model_defaults(name).min_input_size
    hparams = {"pca_dim": 4} if name == "microcrystalnet" else {}
    model = create_model(name, (size, size, 1), num_classes=4, **hparams)
    x, y = _patches(4, size), np.arange(4)
    prepare_model(model, x)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    assert probabilities.shape == (4, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert embedding_model(model).output.shape[1] == model.get_layer("predictions").input.shape[1]


def test_microcrystalnet_trains_on_tensorflow(tensorflow_run):
    stdout, stderr = tensorflow_run.communicate(timeout=300)
    assert tensorflow_run.returncode == 0, stderr[-2000:]
    assert stdout.strip().endswith("ok")


def test_nsr_zscore_and_pca_reproduce_scikit_learn():
    model = _tiny_mcn()
    x = _patches(32, 16)
    prepare_model(model, x)
    stem = _submodel(model, "flatten").predict(x, verbose=0).astype(np.float64)
    zscored = StandardScaler().fit_transform(stem)
    expected = PCA(n_components=8, svd_solver="full").fit_transform(zscored)
    projected = _submodel(model, "nsr_pca").predict(x, verbose=0)
    np.testing.assert_allclose(_submodel(model, "nsr_zscore").predict(x, verbose=0), zscored, atol=1e-3)
    signs = np.sign(np.sum(projected * expected, axis=0))
    np.testing.assert_allclose(projected * signs, expected, atol=1e-3 * np.abs(expected).max())
    explained = keras.ops.convert_to_numpy(model.get_layer("nsr_pca").explained_variance)
    np.testing.assert_allclose(explained, PCA(8).fit(zscored).explained_variance_, rtol=1e-3)
    assert model.get_layer("nsr_pca").trainable_weights == []


def test_zscore_floors_near_constant_features():
    """An almost-dead ReLU feature must not be amplified ~1e4-fold once training moves it."""
    from mcn.models.nsr import ZScore

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 6))
    features[:, 0] = 1e-6 * rng.normal(size=200)
    layer = ZScore()
    layer.build((None, 6))
    layer.fit(features)
    moved = np.zeros((1, 6), np.float32)
    moved[0, 0] = 1.0
    out = keras.ops.convert_to_numpy(layer(moved))
    assert abs(out[0, 0]) < 1e3  # ~100 with the floor (1% of the median spread); ~1e6 without
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.std)[1:], features[:, 1:].std(axis=0), rtol=1e-5)


def test_prepare_model_calibrates_the_stem_batchnorm():
    model = _tiny_mcn()
    x = _patches(32, 16)
    prepare_model(model, x)
    conv = _submodel(model, "block2_conv").predict(x, verbose=0)
    bn = model.get_layer("block2_bn")
    moving_mean = keras.ops.convert_to_numpy(bn.moving_mean)
    np.testing.assert_allclose(moving_mean, conv.mean(axis=(0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance), conv.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-6
    )


def test_recalibrate_batchnorm_sets_every_batchnorm_and_restores_the_layers():
    from mcn.models import recalibrate_batchnorm

    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn1")(conv)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.BatchNormalization(name="bn2")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    patches = np.random.default_rng(0).normal(5.0, 3.0, (48, 8, 8, 1)).astype("float32")
    assert recalibrate_batchnorm(model, patches, batch_size=16) == 2
    features = _submodel(model, "conv").predict(patches, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("bn1").moving_mean),
                               features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    # bn2: the average over the three batches of its input's batch statistics, that input being bn1
    # normalising each batch by the batch's own statistics, with dropout off
    batches = [features[k:k + 16] for k in (0, 16, 32)]
    seen = [((b - b.mean(axis=(0, 1, 2))) / np.sqrt(b.var(axis=(0, 1, 2)) + 1e-3)).reshape(16, -1) for b in batches]
    bn2 = model.get_layer("bn2")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn2.moving_mean),
                               np.mean([f.mean(axis=0) for f in seen], axis=0), atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn2.moving_variance),
                               np.mean([f.var(axis=0) for f in seen], axis=0), rtol=1e-3, atol=1e-4)
    assert model.get_layer("bn1").momentum == 0.99 and model.get_layer("drop").rate == 0.5


@pytest.mark.parametrize(
    ("stages", "fc1_inputs"),
    [
        ({}, 8),
        ({"zscore": False}, 8),
        ({"pca": False}, 128),
        ({"l1": False}, 8),
        ({"zscore": False, "pca": False, "l1": False}, 128),
    ],
)
def test_switching_nsr_stages_off_removes_them(stages, fc1_inputs):
    model = _tiny_mcn(**stages)
    names = {layer.name for layer in model.layers}
    for stage in ("zscore", "pca", "l1"):
        assert (f"nsr_{stage}" in names) == stages.get(stage, True)
    assert model.get_layer("fc1_dense").input.shape[-1] == fc1_inputs


def test_architecture_hparams_shape_the_stem():
    model = create_model("microcrystalnet", (32, 32, 1), depth=2, filters=(8, 16), pca_dim=16)
    assert [layer.name for layer in model.layers if layer.name.endswith("_conv")] == [
        "block1_conv",
        "block2_conv",
    ]
    assert model.get_layer("block1_conv").kernel_size == (7, 7)
    assert model.get_layer("flatten").output.shape[-1] == 8 * 8 * 16
    assert embedding_model(model).output.shape[-1] == 256


def test_l1_gate_penalises_and_selects_features():
    model = _tiny_mcn(l1_strength=0.5)
    gate = model.get_layer("nsr_l1").gate
    gate.assign(np.r_[np.zeros(3), np.full(5, 2.0)].astype("float32"))
    model(_patches(2, 16))
    penalty = float(keras.ops.convert_to_numpy(sum(model.losses)))
    assert penalty == pytest.approx(0.5 * 10.0)
    np.testing.assert_array_equal(selected_features(model), [3, 4, 5, 6, 7])


def test_saved_model_reloads_with_identical_predictions(tmp_path):
    model = _tiny_mcn()
    x = _patches(16, 16)
    prepare_model(model, x)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(16) % 4, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "mcn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert reloaded.get_layer("nsr_pca").n_components == 8


def test_baseline_loads_a_local_weights_file(tmp_path):
    source = create_model("vgg16", (32, 32, 1))
    path = tmp_path / "vgg16_notop.weights.h5"
    source.get_layer("vgg16_backbone").save_weights(path)
    loaded = create_model("vgg16", (32, 32, 1), weights=str(path))
    for a, b in zip(source.get_layer("vgg16_backbone").weights, loaded.get_layer("vgg16_backbone").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_count_flops_matches_a_hand_count():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same")(inputs)  # 2*(8*8*2*3*3*1) + 8*8*2 bias = 2432
    x = keras.layers.BatchNormalization()(x)  # 2 * 8*8*2 = 256
    x = keras.layers.MaxPooling2D(2)(x)  # 4*4*2 outputs * 4 = 128
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)  # 2*32*3 + 3 = 195
    model = keras.Model(inputs, outputs)
    assert count_flops(model) == 2432 + 256 + 128 + 195
    outer_inputs = keras.Input((8, 8, 1))
    nested = keras.Model(outer_inputs, keras.layers.Dense(5)(model(outer_inputs)))  # + 2*3*5 + 5
    assert count_flops(nested) == 2432 + 256 + 128 + 195 + 35


def test_count_flops_of_microcrystalnet_matches_a_hand_count():
    stem = 0
    for size, c_in, c_out, kernel in [(64, 1, 32, 7), (32, 32, 64, 5), (16, 64, 128, 3), (8, 128, 128, 3)]:
        outputs = size * size * c_out
        stem += 2 * outputs * kernel * kernel * c_in + outputs  # conv + bias
        stem += 2 * outputs + outputs  # batch norm + 2x2 max pooling (4 per pooled output)
    nsr = 2 * 2048 + (2048 + 2 * 2048 * 128) + 128  # z-score, PCA (centre + project), gate
    head = (2 * 128 * 1024 + 1024 + 2 * 1024) + (2 * 1024 * 256 + 256 + 2 * 256) + (2 * 256 * 4 + 4)
    assert count_flops(create_model("microcrystalnet")) == stem + nsr + head


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: create_model("alexnet"), ValueError, "registered models: densenet121"),
        (lambda: create_model("vgg16", dropout=0.1), ValueError, "dropout"),
        (lambda: create_model("microcrystalnet", (8, 8, 1)), ValueError, "at least 16x16"),
        (lambda: create_model("inceptionv3", (74, 74, 1)), ValueError, "at least 75x75"),
        (lambda: create_model("resnet50", (32, 32, 3)), ValueError, "channels=1"),
        (lambda: create_model("vgg16", 64), ValueError, "input_shape"),
        (lambda: create_model("vgg16", num_classes=1), ValueError, "num_classes"),
        (lambda: create_model("vgg16", (32, 32, 1), weights="imagenet"), ValueError, "download"),
        (lambda: create_model("vgg16", (32, 32, 1), weights="/nope.h5"), DataError, "/nope.h5"),
        (lambda: _tiny_mcn(pca_dim=200), ValueError, "pca_dim must be <= the 128"),
        (lambda: create_model("microcrystalnet", kernel_sizes=(3, 3)), ValueError, "same length"),
        (lambda: create_model("microcrystalnet", filters="32,64"), ValueError, "filters must be"),
        (lambda: prepare_model(_tiny_mcn(), _patches(4, 16)), ValueError, "at least 8 training"),
        (lambda: prepare_model(_tiny_mcn(), _patches(8, 32)), ValueError, "x_train must have shape"),
    ],
)
def test_bad_names_hparams_and_sizes_give_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
