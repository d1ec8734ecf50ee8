"""`python -m benchmarks.run` end to end (smoke profile) and the statistics behind its table."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
from pathlib import Path

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
    assert rows.loc["vgg16", "p_worse"] > 0.99 and rows.loc["vgg16", "p_better"] < 0.01
    assert np.isnan(rows.loc["microcrystalnet", "p_worse"])
    for name in ("comparison.md", "comparison.csv", "comparison.tex", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert not (tmp_path / "critical_difference.png").exists()  # no rank test across the folds of one data set
    assert "| 1 | microcrystalnet |" in printed and "failed" in printed
    assert "sample std, ddof=1" in (tmp_path / "comparison.md").read_text()


def test_table_ranks_models_across_data_sets_only(tmp_path, capsys):
    rng = np.random.default_rng(2)
    dirs = []
    for d, shift in enumerate((0.0, 0.05, -0.03)):
        folder = tmp_path / f"data{d}"
        for model, level in (("microcrystalnet", 0.8), ("vgg16", 0.6), ("knn:hybrid", 0.7)):
            results_io.save_result(folder, _fake_result(model, level + shift, rng))
        results_io.write_json(folder / results_io.CONFIG_FILE, {"data_name": f"data{d}", "folds": 5, "seed": 0,
                                                                 "group_by": "sample", "repeats": 1})
        dirs.append(str(folder))
    table.main([*dirs, "--out", str(tmp_path / "ranking")])
    printed = capsys.readouterr().out
    ranking = (tmp_path / "ranking" / "ranking.md").read_text()
    assert "Friedman test over 3 models x 3 data sets" in ranking
    assert (tmp_path / "ranking" / "critical_difference.png").stat().st_size > 0
    assert "| microcrystalnet | 1.00 |" in ranking and "grouped by rock sample" in printed


def test_bayesian_correlated_ttest_matches_baycomp_and_hand_computation():
    a = np.array([0.80, 0.82, 0.79, 0.81, 0.83, 0.78, 0.84, 0.80, 0.81, 0.82])
    b = np.array([0.78, 0.80, 0.80, 0.79, 0.80, 0.79, 0.80, 0.81, 0.78, 0.80])
    worse, equal, better = stats.bayesian_correlated_ttest(a, b, test_fraction=0.2, rope=0.01)
    d = a - b
    scale = math.sqrt((1 / 10 + 0.2 / 0.8) * d.var(ddof=1))
    assert better == pytest.approx(sps.t.sf(0.01, 9, loc=d.mean(), scale=scale))
    assert worse == pytest.approx(sps.t.cdf(-0.01, 9, loc=d.mean(), scale=scale))
    assert worse + equal + better == pytest.approx(1)
    assert stats.bayesian_correlated_ttest(a, a, 0.2) == (0.0, 1.0, 0.0)
    assert stats.bayesian_correlated_ttest(a, b, 0.2, rope=1.0)[1] > 0.999
    baycomp = pytest.importorskip("baycomp")
    # baycomp orders (left, rope, right) as P(first better), P(equivalent), P(second better); rho = 1/folds
    left, rope, right = baycomp.two_on_single(a, b, rope=0.01, runs=2)
    assert (better, equal, worse) == pytest.approx((left, rope, right))


def test_corrected_unpaired_ttest_adds_the_corrected_variances():
    a, b = np.array([0.9, 0.92, 0.88, 0.91, 0.89]), np.array([0.8, 0.83, 0.78, 0.81, 0.79])
    t, p = stats.corrected_unpaired_ttest(a, b, 0.25, 0.25)
    va, vb = (0.2 + 0.25) * a.var(ddof=1), (0.2 + 0.25) * b.var(ddof=1)
    assert t == pytest.approx((a.mean() - b.mean()) / math.sqrt(va + vb))
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    assert p == pytest.approx(2 * sps.t.sf(t, df)) and p < 0.05


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
    assert profiles.resolve_models(None, p, cnns, clfs) == p.default_models()
    assert profiles.resolve_models("xgboost:hybrid,vgg16", p, cnns, clfs) == ["vgg16", "xgboost:hybrid"]
    assert profiles.resolve_models("knn", p, cnns, clfs) == ["knn:handcrafted", "knn:embedding", "knn:hybrid"]
    assert profiles.resolve_models("handcrafted", p, cnns, clfs) == ["logreg:handcrafted", "knn:handcrafted"]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        profiles.resolve_models("nope", p, cnns, clfs)


@pytest.mark.parametrize("gpu, expected", [(None, "quick"), ("NVIDIA H200", "paper")])
def test_default_profile_is_paper_on_a_gpu_and_quick_without(monkeypatch, gpu, expected):
    monkeypatch.setattr(profiles, "detect_gpu", lambda backend: gpu)
    profile, reason = profiles.default_profile("jax")
    assert profile.name == expected and ((gpu or "no GPU") in reason)
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
    assert "comparison/comparison_table.json" in tables  # an MLflow table: the UI sorts and compares it
    import mlflow
    import pandas as pd

    rows = pd.read_csv(out / "comparison.csv")
    assert sorted(rows["model"]) == sorted(models) and rows["error"].isna().all()
    # opens as model training, not in MLflow 3's GenAI view
    assert mlflow.get_experiment_by_name("scenes").tags["mlflow.experimentKind"] == "custom_model_development"
    # every classical row records its estimator's hyper-parameters, so the compare view lines them up
    knn = by_name["knn:handcrafted"].data.params
    assert knn["classifier"] == "knn" and knn["feature_set"] == "handcrafted" and knn["family"] == "classical"
    assert knn["estimator.model__n_neighbors"] == "7" and "estimator.impute__strategy" in knn


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


# ---- repeats, tuned rows, cross-fitting --------------------------------------------------------

def test_repeats_and_a_tuned_row(scenes, store, tmp_path):
    import json

    params = tmp_path / "best_params.json"
    params.write_text(json.dumps({"params": {"C": 0.01}, "config": {"model": "logreg", "feature_set": "handcrafted"}}))
    out = tmp_path / "out"
    printed = _run(["--data", str(scenes), "--models", "logreg:handcrafted", "--params", str(params), "--repeats", "2",
                    "--out", str(out), "--tracking-uri", store, *SMOKE_ARGS])
    plain, tuned = (results_io.load_result(out, m) for m in ("logreg:handcrafted", "logreg:handcrafted tuned"))
    assert [f["fold"] for f in plain["folds"]] == [0, 1, 2, 3] and len(tuned["folds"]) == 4
    assert tuned["classifier"] == "logreg" and tuned["feature_set"] == "handcrafted"
    assert [f["metrics"]["f1_macro"] for f in tuned["folds"]] != [f["metrics"]["f1_macro"] for f in plain["folds"]]
    assert "2 repeats with different fold seeds" in printed and "P(better)" in (out / "comparison.md").read_text()
    config = results_io.read_json(out / results_io.CONFIG_FILE)
    assert config["repeats"] == 2 and config["tuned"] == {"logreg:handcrafted tuned": {"C": 0.01}}
    params.write_text(json.dumps({"params": {}, "config": {"model": "microcrystalnet", "feature_set": None}}))
    with pytest.raises(SystemExit, match="tuned rows are classical models"):
        _run(["--data", str(scenes), "--models", "logreg:handcrafted", "--params", str(params), "--out",
              str(tmp_path / "other"), *SMOKE_ARGS])


def test_crossfit_training_rows_come_from_cnns_that_never_saw_them():
    from types import SimpleNamespace

    from features.crossfit import crossfit_features, out_of_fold_embeddings
    from mcn.data.splits import Fold

    n = 12
    fold = Fold(0, np.arange(0, 6), np.arange(6, 8), np.arange(8, 12))
    outer = {0: np.full((n, 2), 9.0)}  # the outer CNN's embeddings: it trained on rows 0..7
    inner = [SimpleNamespace(test_index=np.array([0, 1, 2, 6]), embeddings=np.full((n, 2), 1.0)),
             SimpleNamespace(test_index=np.array([3, 4, 5, 7]), embeddings=np.full((n, 2), 2.0))]
    oof = out_of_fold_embeddings(inner, n)
    assert np.isnan(oof[8:]).all() and (oof[[0, 1, 2, 6]] == 1).all() and (oof[[3, 4, 5, 7]] == 2).all()
    handcrafted = np.arange(n, dtype=float)[:, None]
    x_train, x_test = crossfit_features("hybrid", handcrafted, outer, {0: oof})(fold)
    np.testing.assert_array_equal(x_train[:, 0], [0, 1, 2, 3, 4, 5, 6, 7])  # training_index order
    np.testing.assert_array_equal(x_train[:, 1], [1, 1, 1, 2, 2, 2, 1, 2])  # out-of-fold, never the outer CNN's
    assert (x_test[:, 1:] == 9).all() and x_test[:, 0].tolist() == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="no out-of-fold embedding"):
        crossfit_features("embedding", None, outer, {0: out_of_fold_embeddings(inner[:1], n)})(fold)


def test_crossfit_run_trains_inner_cnns_per_fold(store, tmp_path):
    from mcn.data.synthetic import generate

    scenes = generate(tmp_path / "scenes", n_images=8, image_size=256, seed=0)  # 4 images per training part
    out = tmp_path / "out"
    _run(["--data", str(scenes), "--models", "logreg:hybrid", "--crossfit", "2", "--group-by", "image",
          "--out", str(out), "--tracking-uri", store, *SMOKE_ARGS])
    assert results_io.load_result(out, "logreg:hybrid")["error"] is None
    assert results_io.read_json(out / results_io.CONFIG_FILE)["crossfit"] == 2
    for k in (0, 1):
        assert sorted(p.name for p in (out / "cnn" / "microcrystalnet" / "crossfit" / f"fold_{k}").glob("fold_*")) \
            == ["fold_0", "fold_1"]
    assert "cross-fitted over 2 inner folds" in (out / "comparison.md").read_text()


# ---- leakage audit and size comparison -----------------------------------------------------------

def test_leakage_audit_compares_the_splits_of_one_model(tiny_scene_dir, tmp_path):
    import pandas as pd

    from benchmarks import leakage

    out = tmp_path / "leak"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        leakage.main(["--data", str(tiny_scene_dir), "--models", "logreg:handcrafted", "--folds", "2", "--out",
                      str(out), "--quiet", "--jobs", "1"])
    table = pd.read_csv(out / "leakage.csv")
    assert table["split"].tolist() == ["crystal", "image", "sample"] and (table["folds"] == 2).all()
    reference = table[table["split"] == "sample"].iloc[0]
    assert reference["f1_macro_inflation"] == 0 and np.isnan(reference["f1_macro_p"])
    crystal = table[table["split"] == "crystal"].iloc[0]
    assert crystal["f1_macro_inflation"] == pytest.approx(crystal["f1_macro"] - reference["f1_macro"])
    assert 0 <= crystal["f1_macro_p"] <= 1 and (out / "leakage.png").stat().st_size > 0
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) == 6 and "random per crystal" in printed.getvalue()
    with pytest.raises(SystemExit, match="already holds"):
        leakage.main(["--data", str(tiny_scene_dir), "--models", "logreg:handcrafted", "--out", str(out)])


def test_size_comparison_pairs_with_and_without_size_on_the_same_folds(tiny_scene_dir, tmp_path):
    import pandas as pd

    from benchmarks import size_features

    out = tmp_path / "size"
    with contextlib.redirect_stdout(io.StringIO()):
        size_features.main(["--data", str(tiny_scene_dir), "--models", "logreg", "--folds", "2", "--out", str(out),
                            "--jobs", "1"])
    folds = pd.read_csv(out / "folds.csv")
    assert sorted(set(folds["sizes"])) == ["nm", "none"]
    n_features = folds.groupby("sizes")["n_features"].unique()
    assert n_features["nm"].tolist() == [31] and n_features["none"].tolist() == [24]
    assert "gain" in (out / "size_features.md").read_text()


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


def test_two_benchmark_processes_start_together_on_a_fresh_store(scenes, tmp_path):
    """Issue 12 item 7 end to end: two `benchmarks.run` processes, one fresh MLflow SQLite store."""
    import subprocess
    import sys

    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.run", "--data", str(scenes), "--models",
                               "logreg:handcrafted", "--out", str(tmp_path / f"out{i}"), "--tracking-uri", store,
                               "--jobs", "1", *SMOKE_ARGS], cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outputs]
    runs = _runs(store, "scenes")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert _run(["--data", str(scenes), "--models", "logreg:handcrafted", "--out", str(tmp_path / "out0"),
                 "--tracking-uri", store, *SMOKE_ARGS])  # the store still works for every later run


def test_cv_models_reports_where_training_converged(scenes, tmp_path):
    """The reference table says which epoch was kept and when validation macro-F1 peaked, and draws
    each model's learning curves (train vs validation loss, accuracy and macro-F1 per fold)."""
    import pandas as pd

    from benchmarks import cv_models

    out = tmp_path / "cv"
    cv_models.main(["--data", str(scenes), "--profile", "smoke", "--models", "microcrystalnet", "--folds", "2",
                    "--epochs", "2", "--backend", "torch", "--out", str(out), "--quiet"])
    row = pd.read_csv(out / "torch" / "cv_models.csv").iloc[0]
    assert row["error"] != row["error"]  # NaN: no error
    assert 1 <= row["best_epoch"] <= 2 and 1 <= row["val_f1_peak_epoch"] <= 2
    assert (out / "torch" / "microcrystalnet" / "training_curves.png").stat().st_size > 0
    assert "val F1 peak epoch" in (out / "torch" / "cv_models.md").read_text()


def test_cv_models_keeps_the_finished_models_rows_when_a_later_model_is_interrupted(scenes, tmp_path, monkeypatch):
    """A long reference run (hours on a CPU, a fixed lease on a GPU) that is stopped during its third
    model still has the first two models' rows in cv_models.csv."""
    import pandas as pd

    from benchmarks import cv_models

    def fake(model, dataset, folds, profile, args):
        if model == "resnet50":
            raise KeyboardInterrupt
        return {"model": model, "backend": "torch", "f1_macro_mean": 0.5, "error": ""}

    monkeypatch.setattr(cv_models, "benchmark_model", fake)
    out = tmp_path / "cv"
    with pytest.raises(KeyboardInterrupt):
        cv_models.main(["--data", str(scenes), "--profile", "smoke", "--models", "microcrystalnet,vgg16,resnet50",
                        "--folds", "2", "--backend", "torch", "--out", str(out), "--quiet"])
    assert list(pd.read_csv(out / "torch" / "cv_models.csv")["model"]) == ["microcrystalnet", "vgg16"]
