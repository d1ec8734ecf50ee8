"""`python -m benchmarks.run` end to end (smoke profile) and the statistics behind its table."""

from __future__ import annotations

import contextlib
import io
import math
import shutil

import numpy as np
import pytest
from scipy import stats as sps

from benchmarks import run, table
from mcn.experiment import profiles, stats
from mcn.experiment.comparison import compare
from benchmarks import results as results_io
from mcn.metrics import metric_names

CLASSES = ["RES", "PES", "AA", "RA"]


# ---- statistics on known inputs ---------------------------------------------------------------

def test_corrected_ttest_matches_hand_computation():
    a = np.array([0.80, 0.82, 0.79, 0.81, 0.83])
    b = np.array([0.78, 0.80, 0.80, 0.79, 0.80])
    d = a - b                                      # 0.02, 0.02, -0.01, 0.02, 0.03
    var = np.sum((d - 0.016) ** 2) / 4             # 2.3e-4
    t_hand = 0.016 / math.sqrt((1 / 5 + 0.25) * var)
    t, p = stats.corrected_resampled_ttest(a, b, test_train_ratio=0.25)
    assert t == pytest.approx(t_hand) and t == pytest.approx(1.5727, abs=1e-4)
    assert p == pytest.approx(2 * sps.t.sf(t_hand, 4))
    # without the correction term it is the plain paired t-test
    t0, p0 = stats.corrected_resampled_ttest(a, b, test_train_ratio=1e-12)
    ref = sps.ttest_rel(a, b)
    assert t0 == pytest.approx(ref.statistic, rel=1e-6) and p0 == pytest.approx(ref.pvalue, rel=1e-6)
    assert stats.corrected_resampled_ttest(a, a, 0.25) == (0.0, 1.0)


def test_versus_best_tests_every_entry_against_the_highest_mean():
    scores = {"a": np.array([0.70, 0.72, 0.69]), "b": np.array([0.80, 0.83, 0.79]),
              "c": np.array([0.60, 0.61, 0.55]), "short": np.array([0.9, 0.9])}
    assert stats.versus_best(scores, 0.25) == ("short", {}, {})  # no other entry has its 2 folds
    best, raw, adjusted = stats.versus_best({k: v for k, v in scores.items() if k != "short"}, 0.25)
    assert best == "b" and set(raw) == {"a", "c"}
    assert raw["a"] == stats.corrected_resampled_ttest(scores["b"], scores["a"], 0.25)[1]
    np.testing.assert_allclose([adjusted["a"], adjusted["c"]], stats.holm(np.array([raw["a"], raw["c"]])))


def test_friedman_on_a_strict_ordering_and_against_scipy():
    scores = np.array([[0.9, 0.8, 0.7]] * 4)       # model 0 always first: ranks 1, 2, 3
    result = stats.friedman(scores)
    assert result.mean_ranks.tolist() == [1.0, 2.0, 3.0]
    # chi2 = 12 N / (k (k+1)) * (sum R^2 - k (k+1)^2 / 4) = 4 * (14 - 12) = 8, df 2: p = exp(-4)
    assert result.statistic == pytest.approx(8.0) and result.p_value == pytest.approx(math.exp(-4))
    rng = np.random.default_rng(0)
    scores = rng.random((5, 6))
    ref = sps.friedmanchisquare(*scores.T)
    assert stats.friedman(scores).statistic == pytest.approx(ref.statistic)
    assert stats.friedman(scores).p_value == pytest.approx(ref.pvalue)


def test_nemenyi_critical_difference_matches_demsar_table():
    # Demsar (2006), table 5(a): q_0.05 = 2.343 (k=3), 2.728 (k=5), 3.164 (k=10)
    for k, q in ((3, 2.343), (5, 2.728), (10, 3.164)):
        assert stats.nemenyi_critical_difference(k, 6) == pytest.approx(q * math.sqrt(k * (k + 1) / 36), abs=2e-3)


def test_holm_and_cliques():
    assert stats.holm(np.array([0.01, 0.04, 0.03, np.nan])).tolist()[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert stats.cliques(np.array([1.0, 2.0, 5.0]), 1.5) == [(0, 1)]


# ---- comparison table from result files --------------------------------------------------------

def _fake_result(model: str, level: float, rng, error: str | None = None) -> dict:
    family = "classical" if ":" in model else "cnn"
    folds = [] if error else [
        {"fold": k, "metrics": {m: float(np.clip(level + rng.normal(0, 0.02), 0, 1)) for m in metric_names(CLASSES)},
         "n_train": 80, "n_test": 20, "fit_seconds": 1.0, "inference_seconds_per_crystal": 1e-3}
        for k in range(5)]
    return {"model": model, "family": family, "feature_set": model.partition(":")[2] or "image",
            "class_names": CLASSES, "folds": folds, "n_params": 1000 if family == "cnn" else None,
            "flops": None, "error": error}


def test_table_has_a_row_per_model_tests_and_files(tmp_path, capsys):
    rng = np.random.default_rng(1)
    found = [_fake_result("microcrystalnet", 0.9, rng), _fake_result("vgg16", 0.6, rng),
             _fake_result("knn:hybrid", 0.7, rng), _fake_result("densenet121", 0, rng, error="ValueError: x")]
    for r in found:
        results_io.save_result(tmp_path, r)
    table.main([str(tmp_path)])                     # remade from the files alone
    printed = capsys.readouterr().out
    comparison = compare(results_io.load_results(tmp_path))
    rows = comparison.table.set_index("model")
    assert set(rows.index) == {r["model"] for r in found}
    assert rows.loc["microcrystalnet", "rank"] == 1 and np.isnan(rows.loc["microcrystalnet", "p_vs_best"])
    assert rows.loc["vgg16", "p_vs_best"] < 0.05 and rows.loc["densenet121", "error"] == "ValueError: x"
    assert comparison.friedman is not None and len(comparison.friedman_models) == 3
    for name in ("comparison.md", "comparison.csv", "comparison.tex", "comparison.png", "critical_difference.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| 1 | microcrystalnet |" in printed and "failed" in printed


def test_leftover_temporary_files_are_not_results(tmp_path, capsys):
    rng = np.random.default_rng(2)
    for r in (_fake_result("microcrystalnet", 0.9, rng), _fake_result("knn:hybrid", 0.7, rng)):
        path = results_io.save_result(tmp_path, r)
    folder = tmp_path / results_io.RESULTS_DIR
    (folder / f".{path.stem}.tmp-4242-0a1b2c3d.json").write_text(path.read_text())  # complete, killed before rename
    (folder / ".microcrystalnet.tmp-99.json").write_text('{"model": "microcr')     # half written
    assert sorted(r["model"] for r in results_io.load_results(tmp_path)) == ["knn:hybrid", "microcrystalnet"]
    table.main([str(tmp_path)])
    assert (tmp_path / "comparison.csv").read_text().count("knn:hybrid") == 1


# ---- model selection ---------------------------------------------------------------------------

def test_models_option_accepts_names_pairs_and_families():
    p = profiles.SMOKE
    cnns, clfs = list(profiles.CNN_MODELS), list(profiles.CLASSIFIERS)
    assert run.resolve_models(None, p, cnns, clfs) == p.default_models()
    assert run.resolve_models("xgboost:hybrid,vgg16", p, cnns, clfs) == ["vgg16", "xgboost:hybrid"]
    assert run.resolve_models("knn", p, cnns, clfs) == ["knn:handcrafted", "knn:embedding", "knn:hybrid"]
    assert run.resolve_models("handcrafted", p, cnns, clfs) == ["logreg:handcrafted", "knn:handcrafted"]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        run.resolve_models("nope", p, cnns, clfs)


def test_default_profile_is_quick_without_a_gpu():
    profile, reason = profiles.default_profile("torch")
    assert profile.name == "quick" and "no GPU" in reason
    assert profiles.QUICK.digest() != profiles.PAPER.digest()


# ---- the command end to end (smoke profile) ----------------------------------------------------

SMOKE_ARGS = ["--profile", "smoke", "--folds", "2", "--quiet"]


def _run(argv: list[str]) -> str:
    """Run the command in-process; its printed output (progress bars are off)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run.main(argv)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from mcn.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "scenes", n_images=4, image_size=256, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def smoke(scenes, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    argv = ["--data", str(scenes), "--out", str(out), "--tracking-uri", store, *SMOKE_ARGS]
    return argv, out, _run(argv)


def _runs(store: str, experiment: str) -> list:
    import mlflow

    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_smoke_run_tracks_every_model_with_metrics_and_artifacts(smoke, store):
    from mlflow.tracking import MlflowClient

    _, out, printed = smoke
    models = profiles.SMOKE.default_models()
    assert "best model by f1_macro" in printed and "0 failed" in printed
    runs = _runs(store, "scenes")
    by_name = {r.info.run_name: r for r in runs}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) >= 1
    assert set(models) <= set(by_name)
    assert {f"{m} fold {k}" for m in models for k in (0, 1)} <= set(by_name)
    names = metric_names(CLASSES)
    for model in models:
        child = by_name[model]
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        summary = [n for n in names if not n.startswith(("ap_", "auc_"))]  # AP/AUC skip undefined folds
        assert {*summary, *(f"{n}_std" for n in summary)} <= set(child.data.metrics)
        assert child.data.tags["family"] == ("classical" if ":" in model else "cnn")
        for tag in ("data_fingerprint", "code_version", "backend", "profile", "seed", "version.keras"):
            assert child.data.tags[tag]
    client = MlflowClient()
    cnn = by_name["microcrystalnet"]
    figures = {a.path for a in client.list_artifacts(cnn.info.run_id, "figures")}
    assert {"figures/confusion_matrix.png", "figures/tsne.png", "figures/training_curves.png"} <= figures
    assert cnn.data.tags["model_uri"].startswith("models:/")
    assert len(client.get_metric_history(by_name["microcrystalnet fold 0"].info.run_id, "val_loss")) == 1
    tables = {a.path for a in client.list_artifacts(parents[0].info.run_id, "comparison")}
    assert {"comparison/comparison.md", "comparison/comparison.csv", "comparison/comparison.tex",
            "comparison/comparison.png"} <= tables
    import pandas as pd

    rows = pd.read_csv(out / "comparison.csv")
    assert sorted(rows["model"]) == sorted(models) and rows["error"].isna().all()


def test_second_run_resumes_instead_of_recomputing(smoke, store):
    argv, out, _ = smoke
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("cnn/*/fold_*/model.keras"),
                                                 *out.glob("classical/*/fold_*.json")]}
    printed = _run(argv)
    assert "0 model(s) computed, 7 loaded from earlier runs" in printed
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    parents = [r for r in _runs(store, "scenes") if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2


def test_moved_results_name_their_own_model_files(smoke, tmp_path):
    import shutil

    _, out, _ = smoke
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    record = results_io.load_result(moved, "microcrystalnet")
    for fold in record["folds"]:
        found = results_io.resolve_from_record(moved, "microcrystalnet", fold["model_path"])
        assert found == (moved / "cnn" / "microcrystalnet" / f"fold_{fold['fold']}" / "model.keras").resolve()


def test_other_configuration_in_the_same_folder_is_refused(smoke):
    argv, _, _ = smoke
    with pytest.raises(SystemExit) as exc:
        _run([*argv, "--seed", "1"])
    assert "holds results of another configuration" in str(exc.value.code) and "seed 0 -> 1" in str(exc.value.code)


@pytest.fixture(scope="module")
def patch_folder(scenes, tmp_path_factory):
    """The scene crystals as a patch folder: class folders of PNGs, manifest keeping the groups."""
    from mcn.data.io import write_image
    from mcn.data.load import load_dataset

    dataset = load_dataset(scenes)
    root = tmp_path_factory.mktemp("patches") / "patches"
    lines = ["path,label,image_id"]
    for i, (crop, label, image) in enumerate(zip(dataset.crops, dataset.labels, dataset.image_ids)):
        name = dataset.class_names[label]
        (root / name).mkdir(parents=True, exist_ok=True)
        write_image(root / name / f"{i:04d}.png", crop)
        lines.append(f"{name}/{i:04d}.png,{name},{image}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_patch_folder_data_and_a_failing_model(patch_folder, store, tmp_path, monkeypatch):
    import features.crossval

    original = features.crossval.cross_validate_classifier

    def broken(name, *args, **kwargs):
        if name == "knn":
            raise RuntimeError("knn exploded")
        return original(name, *args, **kwargs)

    monkeypatch.setattr(features.crossval, "cross_validate_classifier", broken)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        _run(["--data", str(patch_folder), "--models", "logreg:handcrafted,knn:handcrafted", "--out", str(out),
              "--tracking-uri", store, *SMOKE_ARGS])
    assert "1 model(s) failed: knn:handcrafted (RuntimeError: knn exploded)" in str(exc.value.code)
    assert results_io.load_result(out, "logreg:handcrafted")["error"] is None
    assert "knn exploded" in results_io.load_result(out, "knn:handcrafted")["error"]
    assert (out / "comparison.md").read_text().count("failed") >= 1


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p / "empty"])
def test_bad_path_or_empty_data_set_is_a_one_line_error(tmp_path, make):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        _run(["--data", str(make(tmp_path)), "--out", str(tmp_path / "out"), *SMOKE_ARGS])
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message and str(make(tmp_path)) in message


# ---- data safety, interruption and early refusal (issue 12) -----------------------------------

CLASSICAL = ["--models", "logreg:handcrafted,knn:handcrafted"]


def test_overwrite_deletes_only_the_suites_own_files_even_through_a_symlink(scenes, store, tmp_path):
    real = tmp_path / "real"
    argv = ["--data", str(scenes), "--tracking-uri", store, *CLASSICAL, *SMOKE_ARGS]
    _run([*argv, "--out", str(real)])
    (real / "notes.txt").write_text("mine")
    (real / "my_scans").mkdir()
    (real / "my_scans" / "scan.tif").write_text("mine too")
    link = tmp_path / "link"
    link.symlink_to(real)
    printed = _run([*argv, "--out", str(link), "--overwrite"])
    assert "2 model(s) computed" in printed
    assert (real / "notes.txt").read_text() == "mine" and (real / "my_scans" / "scan.tif").read_text() == "mine too"
    assert results_io.load_result(real, "knn:handcrafted")["error"] is None


def test_ctrl_c_saves_what_finished_says_how_to_resume_and_marks_the_run_killed(scenes, store, tmp_path,
                                                                                monkeypatch, capsys):
    import features.crossval

    original = features.crossval.cross_validate_classifier

    def interrupted(name, *args, **kwargs):
        if name == "knn":
            raise KeyboardInterrupt
        return original(name, *args, **kwargs)

    monkeypatch.setattr(features.crossval, "cross_validate_classifier", interrupted)
    out = tmp_path / "out"
    try:
        with pytest.raises(SystemExit) as exc:
            _run(["--data", str(scenes), "--out", str(out), "--tracking-uri", store, *CLASSICAL, *SMOKE_ARGS])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a KeyboardInterrupt traceback")
    assert exc.value.code == 130
    line = capsys.readouterr().err.strip()
    assert line == (f"interrupted: 1 of 2 model(s) finished and saved in {out} (finished folds of the others "
                    "too); rerun the same command to resume")
    assert results_io.load_result(out, "logreg:handcrafted")["error"] is None
    killed = [r for r in _runs(store, "scenes") if r.info.status == "KILLED"]
    by_name = {r.info.run_name: r for r in killed}
    assert set(by_name) == {"benchmark smoke seed0"}
    assert by_name["benchmark smoke seed0"].data.tags["end_reason"] == "interrupted (Ctrl-C) during knn:handcrafted"


@pytest.fixture(scope="module")
def one_class(scenes, tmp_path_factory):
    import pandas as pd

    root = tmp_path_factory.mktemp("oneclass") / "scenes"
    shutil.copytree(scenes, root)
    crystals = pd.read_csv(root / "crystals.csv")
    crystals["label"] = "RES"
    crystals.to_csv(root / "crystals.csv", index=False)
    return root


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be an integer >= 0; got -1"),
    (["--folds", "1"], "--folds must be >= 2; got 1"),
    (["--jobs", "0"], "--jobs must be >= 1 (or -1: every CPU); got 0"),
    (["--models", "microcrystalnet,nope"], "unknown model 'nope'"),
    (["--out", "{file}"], "--out {file}: is a file, not a folder"),
    (["--out", "{data}/results"], "--out {data}/results: lies inside the data set folder {data}"),
])
def test_bad_flags_are_refused_in_one_line_before_any_data_loads(patch_folder, tmp_path, monkeypatch, flags,
                                                                 message):
    import mcn.data.load

    def no_loading(*args, **kwargs):
        raise AssertionError("the data set was loaded before the flags were checked")

    monkeypatch.setattr(mcn.data.load, "load_dataset", no_loading)
    (tmp_path / "file").write_text("a file")
    fill = {"file": tmp_path / "file", "data": patch_folder}
    flags = [f.format(**fill) for f in flags]
    if "--out" not in flags:
        flags += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        _run(["--data", str(patch_folder), *SMOKE_ARGS, *flags])
    assert str(exc.value.code).startswith("error: ") and message.format(**fill) in str(exc.value.code)
    assert "\n" not in str(exc.value.code)


def test_one_class_data_set_is_refused_before_training(one_class, tmp_path, monkeypatch):
    import features.crossval
    import mcn.train

    def no_training(*args, **kwargs):
        raise AssertionError("a model trained on one class")

    monkeypatch.setattr(mcn.train, "cross_validate", no_training)
    monkeypatch.setattr(features.crossval, "cross_validate_classifier", no_training)
    with pytest.raises(SystemExit) as exc:
        _run(["--data", str(one_class), "--out", str(tmp_path / "out"), *SMOKE_ARGS])
    assert "every crystal is of one class" in str(exc.value.code) and str(one_class) in str(exc.value.code)


def test_cluster_grid_writes_the_same_results_and_table_as_a_sequential_run(scenes, store, tmp_path):
    pytest.importorskip("distributed")
    import pandas as pd

    argv = ["--data", str(scenes), "--tracking-uri", store, *CLASSICAL, *SMOKE_ARGS]
    _run([*argv, "--out", str(tmp_path / "sequential")])
    printed = _run([*argv, "--out", str(tmp_path / "cluster"), "--cluster", "local:2"])
    assert "cluster: local:2 (2 worker(s))" in printed and "2 model(s) computed, 0 loaded" in printed
    timing = ["fit_s", "infer_ms"]  # wall times differ between any two runs
    tables = [pd.read_csv(tmp_path / name / "comparison.csv") for name in ("sequential", "cluster")]
    pd.testing.assert_frame_equal(*(t.drop(columns=[c for c in t if c in timing]) for t in tables))
    for model in ("logreg:handcrafted", "knn:handcrafted"):
        for k in range(2):
            a, b = (results_io.read_json(results_io.classical_fold_path(tmp_path / name, model, k))
                    for name in ("sequential", "cluster"))
            assert a["metrics"] == b["metrics"] and a["probabilities"] == b["probabilities"]
    again = _run([*argv, "--out", str(tmp_path / "cluster"), "--cluster", "local:2"])  # resume: nothing submitted
    assert "0 model(s) computed, 2 loaded" in again


@pytest.mark.parametrize("value", ["local:0", "somehost:8786", "local"])
def test_bad_cluster_address_is_refused_before_any_work(scenes, tmp_path, value):
    with pytest.raises(SystemExit) as exc:
        _run(["--data", str(scenes), "--out", str(tmp_path / "out"), "--cluster", value, *SMOKE_ARGS])
    assert str(exc.value.code).startswith(f"error: --cluster {value!r}: give local:N")
