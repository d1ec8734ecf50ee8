"""Optuna studies at smoke scale: resume, MLflow nesting, a MicroCrystalNet trial, an ablation table, errors.

The tiny scene set (6 synthetic images) is split into 2 grouped folds; classical-model studies are
the cheap ones, and the two MicroCrystalNet trainings (one HPO trial, the hybrid ablation's
embedding CNN) use a 2-block net at 24 px for 1 epoch. One Optuna and one MLflow SQLite store
serve the whole module.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from studies import ablation, hpo, objectives, spaces

TINY = ["--hparam=filters=[4, 8]", "--hparam=kernel_sizes=[3, 3]", "--hparam=pca_dim=6", "--hparam=fc_units=[16]"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    return {"optuna": f"sqlite:///{root}/optuna.db", "mlflow": f"sqlite:///{root}/mlflow.db", "out": root / "out"}


@pytest.fixture(scope="module")
def common(stores, tiny_scene_dir):
    return ["--profile", "smoke", "--data", str(tiny_scene_dir), "--folds", "2", "--seed", "0", "--quiet",
            "--storage", stores["optuna"], "--tracking-uri", stores["mlflow"], "--out", str(stores["out"]), *TINY]


def _study(stores, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=stores["optuna"])


def _mlflow_runs(stores) -> pd.DataFrame:
    mlflow.set_tracking_uri(stores["mlflow"])
    return mlflow.search_runs(search_all_experiments=True)


def test_spaces_use_the_model_and_classifier_argument_names():
    from features.zoo import create_classifier
    from mcn.models import model_defaults
    from mcn.train import TrainConfig

    hparams = set(model_defaults("microcrystalnet").hparams)
    assert set(spaces.MICROCRYSTALNET) - set(spaces.TRAIN_PARAMS) <= hparams
    assert set(spaces.TRAIN_PARAMS) <= set(TrainConfig.__dataclass_fields__)
    for name, space in spaces.CLASSIFIERS.items():
        create_classifier(name, **{k: d.low if hasattr(d, "low") else d.choices[0] for k, d in space.items()})
    train, model = spaces.split_params({"batch_size": 64, "kernel_sizes": "7,5,3,3", "fc_dropout": 0.3})
    assert train == {"batch_size": 64} and model == {"kernel_sizes": (7, 5, 3, 3), "fc_dropout": 0.3}


def test_hpo_resumes_with_trial_numbers_continuing_and_trials_nested_in_mlflow(stores, common):
    argv = ["--model", "logreg", "--study-name", "resume", *common]
    hpo.main([*argv, "--trials", "2"])
    assert [t.number for t in _study(stores, "resume").trials] == [0, 1]
    hpo.main([*argv, "--trials", "4"])  # same study, budget raised: runs trials 2 and 3 only
    study = _study(stores, "resume")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)  # reported fold by fold
    out = stores["out"] / "resume"
    best = json.loads((out / "best_params.json").read_text())
    assert best["value"] == pytest.approx(study.best_value) and set(best["params"]) == {"C"}
    assert "optimistic" in best["note"]
    assert len(pd.read_csv(out / "trials.csv")) == 4
    assert all((out / f"{name}.png").stat().st_size > 0 for name in ("optimization_history", "param_importances"))

    runs = _mlflow_runs(stores)
    parents = runs[runs["tags.optuna_study"] == "resume"]
    assert len(parents) == 1  # the resumed study reopened its own parent run
    children = runs[runs["tags.mlflow.parentRunId"] == parents.run_id.iloc[0]]
    assert sorted(children["tags.optuna_trial"].astype(int)) == [0, 1, 2, 3]
    assert set(children.experiment_id) == set(parents.experiment_id)
    assert children["metrics.f1_macro"].notna().any()


def test_interrupted_trial_fails_and_the_study_resumes(stores, common, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    argv = ["--model", "logreg", "--study-name", "interrupted", "--trials", "1", *common]
    monkeypatch.setattr(objectives, "score_classifier", interrupt)
    try:
        with pytest.raises(SystemExit) as exc:
            hpo.main(argv)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a KeyboardInterrupt traceback")
    assert exc.value.code == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted: 0 trial(s) of study 'interrupted' finished and stored in {stores['optuna']} "
        f"(files in {stores['out'] / 'interrupted'}); rerun the same command to resume")
    runs = _mlflow_runs(stores)
    parent = runs[runs["tags.optuna_study"] == "interrupted"]
    assert parent.status.tolist() == ["KILLED"]
    assert parent["tags.end_reason"].tolist() == ["interrupted (Ctrl-C) during trial 0"]
    monkeypatch.undo()
    hpo.main(argv)
    states = [(t.number, t.state) for t in _study(stores, "interrupted").trials]
    assert states == [(0, optuna.trial.TrialState.FAIL), (1, optuna.trial.TrialState.COMPLETE)]
    runs = _mlflow_runs(stores)
    assert runs[runs["tags.optuna_study"] == "interrupted"].status.tolist() == ["FINISHED"]


def test_hpo_exits_non_zero_when_every_trial_failed(stores, common, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("broken objective")

    monkeypatch.setattr(objectives, "score_classifier", broken)
    with pytest.raises(SystemExit) as exc:
        hpo.main(["--model", "knn", "--study-name", "all-failed", "--trials", "2", *common])
    assert str(exc.value.code) == "error: all 2 trial(s) failed: ValueError: broken objective"


def test_a_dead_workers_trial_is_failed_rerun_and_its_mlflow_run_killed(stores, common):
    import time

    from mlflow.tracking import MlflowClient

    argv = ["--model", "logreg", "--study-name", "dead-worker", "--heartbeat", "1", *common]
    hpo.main([*argv, "--trials", "1"])
    study = _study(stores, "dead-worker")
    trial = study.ask({"C": optuna.distributions.FloatDistribution(1e-3, 1e3, log=True)})  # a worker starts ...
    study._storage.record_heartbeat(trial._trial_id)                                       # ... and is SIGKILLed
    runs = _mlflow_runs(stores)
    parent = runs[runs["tags.optuna_study"] == "dead-worker"].run_id.iloc[0]
    client = MlflowClient()
    orphan = client.create_run(runs[runs.run_id == parent].experiment_id.iloc[0], run_name="trial 1",
                               tags={"mlflow.parentRunId": parent, "optuna_trial": "1"}).info.run_id
    time.sleep(5)  # more than three missed heartbeats (SQLite's clock counts whole seconds)
    hpo.main([*argv, "--trials", "2"])
    trials = _study(stores, "dead-worker").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].system_attrs["failed_trial"] == 1
    run = client.get_run(orphan)
    assert run.info.status == "KILLED" and "no heartbeat" in run.data.tags["end_reason"]


WORKER = """
import sys
from studies import hpo
hpo.main(sys.argv[1:])
"""


def test_two_workers_share_one_study_without_duplicates_or_extra_trials(tiny_scene_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    argv = ["--model", "logreg", "--study-name", "shared", "--trials", "6", "--profile", "smoke", "--data",
            str(tiny_scene_dir), "--folds", "2", "--quiet", "--storage", f"sqlite:///{tmp_path}/optuna.db",
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--out", str(tmp_path / "out")]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, *argv], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [t.number for t in trials] == list(range(6)) and all(t.state.is_finished() for t in trials)
    assert len({t.params["C"] for t in trials}) == 6  # no two workers proposed the same point
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert (runs["tags.optuna_study"] == "shared").sum() == 1  # one parent run for both workers
    assert sorted(runs["tags.optuna_trial"].dropna().astype(int)) == list(range(6))


def test_one_worker_repeats_its_suggestions_from_the_seed():
    from studies.study import TrialSeededTPESampler

    def suggestions():
        study = optuna.create_study(sampler=TrialSeededTPESampler(seed=3))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=12)
        return [t.params["x"] for t in study.trials]

    assert suggestions() == suggestions() and len(set(suggestions())) == 12


def test_microcrystalnet_trial_searches_the_named_parameters(stores, common, eight_images):
    # a CNN's search split needs an early-stopping group besides its training groups: 8 images, not 6
    argv = [str(eight_images) if a == common[common.index("--data") + 1] else a for a in common]
    hpo.main(["--model", "microcrystalnet", "--params", "fc_dropout,learning_rate", "--trials", "1",
              "--study-name", "cnn", "--group-by", "image", *argv])
    (trial,) = _study(stores, "cnn").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and set(trial.params) == {"fc_dropout", "learning_rate"}
    assert len(trial.user_attrs["fold_metrics"]) == 2 and 0 <= trial.value <= 1


def test_hybrid_ablation_table_has_one_row_per_variant(stores, common, capsys):
    ablation.main(["--ablation", "hybrid", "--study-name", "hybrid", *common])
    table = pd.read_csv(stores["out"] / "hybrid" / "ablation.csv")
    assert table["variant"].tolist() == [f"{c}:{f}" for c in ("logreg", "knn")
                                         for f in ("handcrafted", "embedding", "hybrid")]
    assert np.isfinite(table[["f1_macro", "f1_macro_std", "top1", "top1_std"]].to_numpy()).all()
    assert (table["folds"] == 2).all() and (stores["out"] / "hybrid" / "ablation.png").stat().st_size > 0
    best = table["f1_macro"].idxmax()
    assert np.isnan(table.loc[best, "p_vs_best"])
    assert table.drop(index=best)["p_vs_best"].between(0, 1).all()
    assert (table.drop(index=best)["p_holm"] >= table.drop(index=best)["p_vs_best"]).all()
    printed = capsys.readouterr().out
    assert "| logreg:hybrid |" in printed and "±" in printed
    ablation.main(["--ablation", "hybrid", "--study-name", "hybrid", *common])  # complete: nothing reruns
    assert len(_study(stores, "hybrid").trials) == 6


def test_ablation_requeues_interrupted_variants_only():
    grid = {"a": {}, "b": {}, "c": {}}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({"variant": list(grid)}))
    choice = optuna.distributions.CategoricalDistribution(list(grid))
    study.add_trial(optuna.trial.create_trial(params={"variant": "a"}, distributions={"variant": choice},
                                              state=optuna.trial.TrialState.FAIL))  # e.g. Ctrl-C
    study.add_trial(optuna.trial.create_trial(params={"variant": "b"}, distributions={"variant": choice}, value=0.5))
    assert ablation._queue_missing(study, grid) == ["a", "c"]
    assert ablation._queue_missing(study, grid) == ["a", "c"]  # already queued: not queued twice
    study.optimize(lambda t: len(t.suggest_categorical("variant", list(grid))), n_trials=2)
    assert [t.params["variant"] for t in study.trials[2:]] == ["a", "c"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "logreg", "--params", "C,nope"], "unknown parameter.*nope"),
    (["--model", "logreg", "--params", ","], "search space is empty"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--model", "logreg", "--storage", "postgresql://nohost/db"], "cannot open Optuna storage 'postgresql://"),
    (["--model", "logreg", "--storage", "sqlite:////nonexistent/dir/optuna.db"], "folder /nonexistent/dir does not"),
])
def test_hpo_errors_are_one_line(common, argv, message):
    with pytest.raises(SystemExit, match=message) as caught:
        hpo.main([*common, *argv])
    assert str(caught.value).startswith("error: ") and "\n" not in str(caught.value)


def test_resuming_under_other_settings_is_refused(common):
    hpo.main([*common, "--model", "logreg", "--study-name", "claimed", "--trials", "1"])
    with pytest.raises(SystemExit, match="'claimed' was made with other settings.*seed 0 -> 1"):
        hpo.main([*common, "--model", "logreg", "--study-name", "claimed", "--seed", "1"])


def test_unknown_ablation_is_an_error(common):
    with pytest.raises(SystemExit, match="unknown ablation 'nope'; choose from nsr"):
        ablation.main([*common, "--ablation", "nope"])


def test_search_trials_never_train_or_score_on_a_fold_s_test_part(stores, common, monkeypatch, tiny_dataset):
    import features.crossval
    from mcn.data.splits import make_folds

    seen = []
    original = features.crossval.cross_validate_classifier

    def spy(name, x, y, folds, *args, **kwargs):
        seen.extend(folds)
        return original(name, x, y, folds, *args, **kwargs)

    monkeypatch.setattr(features.crossval, "cross_validate_classifier", spy)
    hpo.main(["--model", "logreg", "--study-name", "no-test", "--trials", "2", *common])
    outer = {f.index: set(f.test) for f in make_folds(tiny_dataset, n_splits=2, seed=0)}
    assert len(seen) == 4
    for fold in seen:
        assert not outer[fold.index] & (set(fold.train) | set(fold.val) | set(fold.test))


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    from mcn.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("eight") / "scenes", n_images=8, image_size=256, seed=0)


def test_nested_search_scores_each_outer_fold_once_on_data_no_search_saw(stores, eight_images, monkeypatch):
    import features.crossval
    from mcn.data.load import load_dataset
    from mcn.data.splits import make_folds

    calls = []
    original = features.crossval.cross_validate_classifier

    def spy(name, x, y, folds, *args, **kwargs):
        calls.append((folds, kwargs))
        return original(name, x, y, folds, *args, **kwargs)

    monkeypatch.setattr(features.crossval, "cross_validate_classifier", spy)
    out = stores["out"] / "nested"
    hpo.main(["--model", "logreg", "--nested", "--trials", "2", "--inner-folds", "2", "--group-by", "image",
              "--profile", "smoke", "--data", str(eight_images), "--folds", "2", "--quiet", "--storage",
              stores["optuna"], "--tracking-uri", stores["mlflow"], "--out", str(out)])
    outer = make_folds(load_dataset(eight_images), n_splits=2, seed=0, group_by="image")
    assert len(calls) == 2 * (2 * 2 + 2)  # per outer fold: 2 trials x 2 inner folds, the winner, the default
    for k, fold in enumerate(outer):
        block = calls[6 * k:6 * (k + 1)]
        for folds, _ in block[:4]:  # the search never touches the outer test fold
            assert all(not set(fold.test) & (set(f.train) | set(f.val) | set(f.test)) for f in folds)
        (tuned,), tuned_params = block[4]
        (default,), default_params = block[5]
        assert set(tuned.test) == set(default.test) == set(fold.test)  # scored once each on it
        assert set(tuned_params) == {"C"} and default_params == {}
    (folder,) = out.glob("*-nested")
    table = pd.read_csv(folder / "nested.csv")
    assert table["outer_fold"].tolist() == [0, 1] and table["best_params"].str.contains('"C"').all()
    assert "tuned (nested)" in (folder / "nested.md").read_text()
    runs = _mlflow_runs(stores)
    parent = runs[runs["tags.mlflow.runName"].str.startswith("nested ")]
    folds = runs[runs["tags.mlflow.parentRunId"] == parent.run_id.iloc[0]]
    assert sorted(folds["tags.outer_fold"].astype(int)) == [0, 1]
    trials = runs[runs["tags.mlflow.parentRunId"].isin(folds.run_id)]
    assert len(trials) == 4
