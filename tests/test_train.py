"""Training protocol, resumable cross-validation, saved models, figures and the `mcn.train` command.

One tiny scene data set (6 synthetic SEM images of 384 px) and one tiny MicroCrystalNet (two conv
blocks at 24 px, 1 epoch) keep the whole file well under a minute on two shared cores. The command
runs once (module fixture); the other tests reuse its run folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import h5py
import keras
import numpy as np
import pytest

from mcn.data.load import load_dataset
from mcn.data.splits import make_folds
from mcn.data.synthetic import generate
from mcn.evaluate import (input_gradients, plot_confusion, plot_pr_curves, plot_roc_curves, plot_scene_overlay,
                          plot_training_curves, plot_tsne)
from mcn.metrics import metric_names
from mcn.models import create_model, prepare_model
from mcn.train import FoldResult, ResumeError, TrainConfig, cross_validate, fold_dir, main
from mcn.train.backend import auto_backend, seed_everything
from mcn.train.folds import save_model
from mcn.train.protocol import whole_batches

HPARAMS = {"filters": [4, 8], "kernel_sizes": [3, 3], "pca_dim": 6, "fc_units": [16]}
CONFIG = TrainConfig(epochs=1, batch_size=64, input_size=24, seed=0)
FIGURES = ("confusion_matrix", "precision_recall", "roc", "training_curves", "tsne", "activation_maps",
           "saliency_maps", "scene_overlay")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("scenes") / "tiny", n_images=6, image_size=384, seed=0)


@pytest.fixture(scope="module")
def dataset(scenes):
    return load_dataset(scenes)


@pytest.fixture(scope="module")
def run_dir(scenes, tmp_path_factory):
    """`python -m mcn.train` on the tiny scenes: 2 folds, 1 epoch, figures and metrics."""
    out = tmp_path_factory.mktemp("run") / "mcn"
    argv = ["--data", str(scenes), "--model", "microcrystalnet", "--folds", "2", "--epochs", "1",
            "--batch-size", "64", "--input-size", "24", "--seed", "0", "--out", str(out), "--quiet"]
    argv += [f"--hparam={k}={json.dumps(v)}" for k, v in HPARAMS.items()]
    main(argv)
    return out


@pytest.fixture(scope="module")
def results(run_dir):
    return [FoldResult.load(fold_dir(run_dir, k)) for k in range(2)]


def test_cv_results_cover_every_crystal(results, dataset):
    tested = np.concatenate([r.test_index for r in results])
    assert sorted(tested) == list(range(len(dataset)))  # each crystal tested exactly once
    for r in results:
        assert r.embeddings.shape == (len(dataset), HPARAMS["fc_units"][-1])
        assert np.isfinite(r.embeddings).all()
        assert r.probabilities.shape == (len(r.test_index), dataset.num_classes)
        np.testing.assert_allclose(r.probabilities.sum(axis=1), 1, atol=1e-5)
        np.testing.assert_array_equal(r.y_true, dataset.labels[r.test_index])
        assert set(metric_names(dataset.class_names)) <= set(r.metrics)
        assert r.epochs_run == 1 and all(len(r.history[k]) == 1 for k in ("loss", "val_loss", "lr"))
        assert r.history["lr"][0] == pytest.approx(CONFIG.learning_rate)
        assert r.n_params > 0 and r.flops > 0 and r.input_size == 24 and r.backend == keras.backend.backend()


def test_command_writes_metrics_and_figures(run_dir):
    for name in FIGURES:
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000, name
    record = json.loads((run_dir / "metrics.json").read_text())
    assert [row["fold"] for row in record["folds"]] == ["0", "1"]
    assert record["mean"]["top1"] == pytest.approx(np.mean([f["top1"] for f in record["folds"]]))
    assert (run_dir / "metrics.csv").read_text().splitlines()[1:] and len((run_dir / "metrics.csv").read_text().splitlines()) == 5


def test_saved_model_reloads_with_identical_predictions(results, dataset):
    fold = results[0]
    model = keras.saving.load_model(fold.model_path)
    again = model.predict(dataset.patches(fold.input_size)[fold.test_index], verbose=0)
    np.testing.assert_allclose(again, fold.probabilities, rtol=0, atol=1e-6)


def test_saved_fold_holds_no_optimizer_state(results):
    with zipfile.ZipFile(results[0].model_path) as archive, archive.open("model.weights.h5") as weights:
        with h5py.File(weights) as store:
            assert "optimizer" not in store and "layers" in store  # Adam's moments were 2/3 of the file


def test_saved_model_is_the_size_of_its_weights(tmp_path):
    """A trained default MicroCrystalNet saves as ~1.0x its float32 weights (with Adam's moments 2.5x)."""
    model = create_model("microcrystalnet", num_classes=4)
    x = np.random.default_rng(0).random((160, 64, 64, 1), dtype=np.float32)
    prepare_model(model, x)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(160) % 4, batch_size=80, epochs=1, verbose=0)
    save_model(model, tmp_path / "model.keras")
    weight_bytes = 4 * sum(int(np.prod(w.shape)) for w in model.weights)
    assert (tmp_path / "model.keras").stat().st_size <= 1.3 * weight_bytes
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_resume_skips_completed_folds(run_dir, dataset, capsys):
    folds = make_folds(dataset, n_splits=2, seed=0)
    fold0 = (fold_dir(run_dir, 0) / "result.json").stat().st_mtime_ns
    shutil.rmtree(fold_dir(run_dir, 1))
    redone = cross_validate("microcrystalnet", dataset, folds, CONFIG, HPARAMS, run_dir, progress=False)
    out = capsys.readouterr().out
    assert "fold 0: loaded from" in out and "fold 1: loaded" not in out
    assert (fold_dir(run_dir, 0) / "result.json").stat().st_mtime_ns == fold0
    assert (fold_dir(run_dir, 1) / "model.keras").is_file() and len(redone) == 2


def test_copied_run_folder_loads_its_own_models_never_the_original(run_dir, tmp_path):
    from mcn.errors import DataError

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert json.loads((fold_dir(copy, 0) / "result.json").read_text())["model_path"] == "model.keras"
    assert FoldResult.load(fold_dir(copy, 0)).model_path == str(fold_dir(copy, 0) / "model.keras")
    (fold_dir(copy, 1) / "model.keras").unlink()
    with pytest.raises(DataError, match="fold_1: its model file model.keras is missing"):
        FoldResult.load(fold_dir(copy, 1))  # refused, although the original's model still exists


def test_resume_refuses_other_settings(run_dir, dataset):
    folds = make_folds(dataset, n_splits=2, seed=0)
    with pytest.raises(ResumeError, match="fold_0.*different model, settings or backend.*--overwrite"):
        cross_validate("microcrystalnet", dataset, folds, TrainConfig(epochs=2, batch_size=64, input_size=24),
                       HPARAMS, run_dir, progress=False)


def test_prepare_model_and_batchnorm_recalibration_see_training_patches_only(dataset, monkeypatch):
    """The NSR block's PCA and the BatchNorm statistics are fitted on data: training crystals only."""
    import mcn.models
    from mcn.train import train_fold

    fold = make_folds(dataset, n_splits=2, seed=0, group_by="image")[0]
    seen = {}
    for name in ("prepare_model", "recalibrate_batchnorm"):
        original = getattr(mcn.models, name)

        def spy(model, x, *args, _name=name, _original=original, **kwargs):
            seen[_name] = np.array(x)
            return _original(model, x, *args, **kwargs)

        monkeypatch.setattr(mcn.models, name, spy)
    train_fold("microcrystalnet", dataset, fold, TrainConfig(epochs=1, batch_size=64, input_size=24, seed=0,
                                                             recalibrate_bn=True, progress=False), HPARAMS)
    patches = dataset.patches(24)
    rotations = {np.rot90(patches[i], r).tobytes() for i in fold.train for r in range(4)}
    held = {patches[i].tobytes() for i in np.concatenate([fold.val, fold.test])} - rotations
    assert set(seen) == {"prepare_model", "recalibrate_batchnorm"}
    for name, x in seen.items():
        assert len(x) >= len(fold.train) // 2, name  # a real share of the training part, not a token batch
        keys = {patch.tobytes() for patch in x}
        assert keys <= rotations and not keys & held, name


def test_plot_functions_write_pngs(results, dataset, tmp_path):
    r = results[0]
    y, p, names = r.y_true, r.probabilities, dataset.class_names
    written = [plot_confusion(y, p, names, tmp_path / "c.png"), plot_pr_curves(y, p, names, tmp_path / "pr.png"),
               plot_roc_curves(y, p, names, tmp_path / "roc.png"),
               plot_training_curves([r.history], tmp_path / "t.png"),
               plot_tsne(r.embeddings[:60], dataset.labels[:60], names, tmp_path / "tsne.png")]
    predicted = np.full(len(dataset), -1)
    predicted[r.test_index] = p.argmax(axis=1)
    written.append(plot_scene_overlay(dataset, predicted, dataset.image_ids[r.test_index[0]], tmp_path / "o.png"))
    assert all(path.stat().st_size > 1000 for path in written)


def test_input_gradients_match_finite_differences():
    # A smooth model: finite differences through ReLU / max-pool kinks would test the model, not the code.
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Dense(5, activation="tanh")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    x = np.random.default_rng(0).random((2, 6, 6, 1)).astype(np.float32)
    target = np.array([0, 2])
    grad = input_gradients(model, x, target)
    assert grad.shape == x.shape
    direction = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    up, down = (model.predict(x + s * 1e-2 * direction, verbose=0)[[0, 1], target] for s in (1, -1))
    assert (up - down).sum() / 2e-2 == pytest.approx((grad * direction).sum(), rel=1e-2)


def test_command_rejects_bad_path_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "missing" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--hparam", "nonsense=1"], "error: --hparam nonsense: not an argument of microcrystalnet"),
    (["--seed", "-1"], "error: --seed must be an integer >= 0; got -1"),
    (["--folds", "1"], "error: --folds must be >= 2; got 1"),
    (["--out", "{file}"], "error: --out {file}: is a file, not a folder"),
])
def test_command_refuses_bad_flags_in_one_line_before_loading_data(scenes, tmp_path, monkeypatch, flags, message):
    import mcn.data.load

    def no_loading(*args, **kwargs):
        raise AssertionError("the data set was loaded before the flags were checked")

    monkeypatch.setattr(mcn.data.load, "load_dataset", no_loading)
    (tmp_path / "file").write_text("a file")
    flags = [f.format(file=tmp_path / "file") for f in flags]
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(scenes), *flags])
    assert str(exit_info.value.code).startswith(message.format(file=tmp_path / "file"))
    assert "\n" not in str(exit_info.value.code)


def test_ctrl_c_says_what_was_saved_and_exits_130(scenes, tmp_path, monkeypatch, capsys):
    import mcn.train.protocol

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mcn.train.protocol, "train_fold", interrupted)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["--data", str(scenes), "--folds", "2", "--out", str(tmp_path / "run"), "--quiet"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a KeyboardInterrupt traceback")
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == (f"interrupted: 0 of 2 fold(s) saved in {tmp_path / 'run'}; "
                                               "rerun the same command to resume")


def test_whole_batches_tops_up_with_seeded_repeats():
    x, y = np.arange(70.0)[:, None], np.arange(70)
    padded_x, padded_y = whole_batches(x, y, 32, seed=3)
    assert len(padded_x) == len(padded_y) == 96
    np.testing.assert_array_equal(padded_x[:70, 0], x[:, 0])
    np.testing.assert_array_equal(padded_x[70:, 0], padded_y[70:])  # rows repeated with their labels
    assert len(set(padded_y[70:])) == 26
    np.testing.assert_array_equal(whole_batches(x, y, 32, seed=3)[1], padded_y)
    assert len(whole_batches(x[:64], y[:64], 32, seed=3)[0]) == 64 and len(whole_batches(x[:5], y[:5], 32, 0)[0]) == 5


def test_training_never_imports_tensorflow_under_another_backend(scenes):
    """keras.utils.set_random_seed imports TensorFlow whenever it is installed: 6 s per process."""
    script = ("import sys, mcn; from mcn.data.load import load_dataset; from mcn.data.splits import make_folds; "
              "from mcn.train import TrainConfig, train_fold; d = load_dataset(sys.argv[1]); "
              "train_fold('microcrystalnet', d, make_folds(d, n_splits=2, seed=0)[0], TrainConfig(epochs=1, "
              f"batch_size=64, input_size=24, progress=False), {HPARAMS!r}); "
              "print('tensorflow' in sys.modules)")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", script, str(scenes)], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_seed_everything_matches_keras_set_random_seed():
    def weights_after(seed_with) -> list[np.ndarray]:
        seed_with(7)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.5),
                                  keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        model.fit(np.ones((16, 4)), np.zeros((16, 2)), batch_size=4, epochs=1, shuffle=True, verbose=0)
        return model.get_weights()

    for a, b in zip(weights_after(keras.utils.set_random_seed), weights_after(seed_everything)):
        np.testing.assert_array_equal(a, b)


def test_auto_backend_picks_the_fastest_installed_backend_on_a_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_backend(["vgg16"])[0] == "torch"
    assert auto_backend(["vgg16", "densenet121"])[0] == "torch"  # a tie keeps the default
    tensorflow = importlib.util.find_spec("tensorflow") is not None
    backend, reason = auto_backend(["densenet121", "efficientnetb0", "resnet50"])
    assert backend == ("tensorflow" if tensorflow else "torch")
    assert "densenet121, efficientnetb0" in reason and ("not installed" in reason) != tensorflow


def test_onecycle_warms_up_to_the_peak_rate_then_anneals(dataset):
    """The fast recipe's schedule: the rate climbs to learning_rate, then falls towards zero, and the
    validation macro-F1 of every epoch is recorded for the learning curves."""
    folds = make_folds(dataset, n_splits=2, seed=0)
    config = TrainConfig(epochs=4, batch_size=16, input_size=24, seed=0, schedule="onecycle", learning_rate=3e-3,
                         warmup_fraction=0.5, label_smoothing=0.1, early_stopping_patience=10, progress=False)
    result = cross_validate("microcrystalnet", dataset, folds[:1], config, HPARAMS, progress=False)[0]
    lr = result.history["lr"]
    assert lr[0] < lr[1] < lr[2] and lr[2] > lr[3], lr
    assert max(lr) == pytest.approx(3e-3, rel=0.35) and lr[3] < 3e-3
    assert result.epochs_run == 4 and result.best_epoch == 3  # no early stop: the annealed weights are kept
    f1 = result.history["val_f1_macro"]
    assert len(f1) == 4 and all(0 <= v <= 1 for v in f1)


def test_test_flips_make_predictions_flip_invariant(dataset):
    """With test_flips a crystal and its mirror image get the same class probabilities."""
    from mcn.train import predict_all

    x = dataset.patches(24)[:40]
    model = create_model("microcrystalnet", input_shape=(24, 24, 1), num_classes=dataset.num_classes, **HPARAMS)
    prepare_model(model, x, seed=0)
    plain, _, _ = predict_all(model, x, 16)
    mirrored, _, _ = predict_all(model, x[:, :, ::-1], 16)
    assert not np.allclose(plain, mirrored, atol=1e-4)
    p, e, _ = predict_all(model, x, 16, test_flips=True)
    p_m, e_m, _ = predict_all(model, np.ascontiguousarray(x[:, :, ::-1]), 16, test_flips=True)
    np.testing.assert_allclose(p, p_m, atol=1e-5)
    np.testing.assert_allclose(e, e_m, atol=1e-4)


def test_runs_saved_before_the_recipe_settings_still_resume():
    """The recipe settings enter the run hash only where they change results, so folds saved before
    they existed (the paper's plateau schedule) keep their hash and resume."""
    from mcn.train import run_hash

    plain = TrainConfig(epochs=3)
    assert not {"schedule", "warmup_fraction", "label_smoothing", "test_flips"} & set(plain.settings())
    assert run_hash("microcrystalnet", plain, {}, "torch") == run_hash(
        "microcrystalnet", TrainConfig(epochs=3, warmup_fraction=0.5), {}, "torch")  # unused under plateau
    onecycle = TrainConfig(epochs=3, schedule="onecycle")
    assert onecycle.settings()["schedule"] == "onecycle"
    assert run_hash("microcrystalnet", onecycle, {}, "torch") != run_hash("microcrystalnet", plain, {}, "torch")
    assert run_hash("microcrystalnet", onecycle, {}, "torch") != run_hash(
        "microcrystalnet", TrainConfig(epochs=3, schedule="onecycle", warmup_fraction=0.5), {}, "torch")
