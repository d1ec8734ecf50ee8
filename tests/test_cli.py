"""The shared command-line vocabulary (`mcn.cli`): the same flag means the same thing on every command."""

from __future__ import annotations

import contextlib
import io
import sys

import pandas as pd
import pytest


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, where tqdm draws its bars unless told not to."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_generator_quiet_draws_no_progress_bar_on_a_terminal(tmp_path, monkeypatch, quiet):
    from mcn.data.synthetic.cli import main

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--out", str(tmp_path / "scenes"), "--n-images", "1", "--image-size", "128",
              *(["--quiet"] if quiet else [])])
    assert ("synthetic scenes" in terminal.getvalue()) is not quiet


@pytest.mark.parametrize("quiet", [False, True])
def test_feature_speed_quiet_draws_no_progress_bar(tiny_scene_dir, capsys, quiet):
    from benchmarks import feature_speed

    feature_speed.main(["--data", str(tiny_scene_dir), "--limit", "4", "--repeat", "1", "--jobs", "1",
                        *(["--quiet"] if quiet else [])])
    printed = capsys.readouterr()
    assert "crystals/s" in printed.out and ("timing" in printed.err) is not quiet


def _classical(args: list[str], out) -> pd.DataFrame:
    from benchmarks import classical_models

    with contextlib.redirect_stdout(io.StringIO()):
        classical_models.main(["--folds", "2", "--jobs", "1", "--quiet", "--out", str(out), *args])
    return pd.read_csv(out / "summary.csv")


def test_classical_models_take_the_one_models_grammar(tiny_scene_dir, tmp_path):
    summary = _classical(["--data", str(tiny_scene_dir), "--models", "logreg:handcrafted,knn"], tmp_path / "a")
    assert sorted(zip(summary["model"], summary["feature_set"])) == [("knn", "handcrafted"),
                                                                     ("logreg", "handcrafted")]


@pytest.mark.parametrize("models, message", [
    ("knn:hybrid", "--models knn:hybrid: this command runs the handcrafted feature set(s) only"),
    ("embedding", "--models embedding: this command runs the handcrafted feature set(s) only"),
    ("vgg16", "this command runs classical models only; got vgg16"),
    ("nope", "unknown model 'nope'"),
])
def test_classical_models_refuse_what_they_cannot_run_in_one_line(tmp_path, monkeypatch, models, message):
    import benchmarks.classical_models

    def no_loading(*args, **kwargs):
        raise AssertionError("the data set was loaded before --models was checked")

    monkeypatch.setattr(benchmarks.classical_models, "load_dataset", no_loading)
    with pytest.raises(SystemExit) as exc:
        _classical(["--models", models], tmp_path / "out")
    assert message in str(exc.value.code) and "\n" not in str(exc.value.code)
