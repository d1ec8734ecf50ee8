"""The shared command-line vocabulary (`mcn.cli`): the same flag means the same thing on every command."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from pathlib import Path

import pandas as pd
import pytest

from mcn import cli


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
def test_feature_speed_quiet_draws_no_progress_bar(tiny_scene_dir, tmp_path, capsys, quiet):
    from benchmarks import feature_speed

    feature_speed.main(["--data", str(tiny_scene_dir), "--limit", "4", "--repeat", "1", "--jobs", "1",
                        "--out", str(tmp_path / "speed"), *(["--quiet"] if quiet else [])])
    printed = capsys.readouterr()
    assert "crystals/s" in printed.out and ("feature_speed:" in printed.err) is not quiet


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


# ---- every command's --help speaks the shared vocabulary ----------------------------------------

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("benchmarks.run", "benchmarks.table", "benchmarks.leakage", "benchmarks.size_features",
            "benchmarks.classical_models", "benchmarks.cv_models", "benchmarks.model_speed",
            "benchmarks.paper_gpu", "benchmarks.feature_speed", "benchmarks.segment_speed",
            "studies.hpo", "studies.ablation", "mcn.train", "mcn.data.synthetic", "mcn.segment.train",
            "mcn.segment.evaluate", "mcn.segment.finetune", "features.export", "mcn")
"""Every command line of the suite, as `python -m <name>`."""
PARSER_MODULES = {"mcn.train": "mcn.train.cli", "mcn.data.synthetic": "mcn.data.synthetic.cli",
                  "mcn": "mcn.__main__"}
QUICK = {"mcn", "benchmarks.table"}
"""The commands that do no long work: every other one takes --quiet."""
RETIRED = {"--scale": "--profile", "--fresh": "--overwrite", "--scenes": "--data", "--checkpoint": "--sam-checkpoint",
           "--model-type": "--sam-model-type"}


def _parser(command: str) -> argparse.ArgumentParser:
    return importlib.import_module(PARSER_MODULES.get(command, command)).build_parser()


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return {command: _parser(command) for command in COMMANDS}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {name: action for action in parser._actions for name in action.option_strings}


def test_every_command_line_of_the_suite_is_checked():
    """A new command must join COMMANDS, so the checks below see its flags."""
    building = set()
    for package in ("mcn", "features", "benchmarks", "studies"):
        for path in (ROOT / package).rglob("*.py"):
            if "ArgumentParser(" in path.read_text():
                building.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    known = {PARSER_MODULES.get(c, c) for c in COMMANDS} | {"studies.cli"}  # studies.cli: hpo's and ablation's base
    assert building <= known, f"command lines not in COMMANDS: {sorted(building - known)}"


def test_no_command_takes_a_retired_flag(parsers):
    for command, parser in parsers.items():
        flags = _flags(parser)
        for old, new in RETIRED.items():
            assert old not in flags, f"{command}: {old} is retired; use {new}"
        if "--holdout" in flags:
            assert command == "mcn.train", f"{command}: a held-out fraction is --val-fraction"
            assert flags["--holdout"].nargs == 0  # mcn.train's 80/10/10 switch, never a fraction
        if "--images" in flags:
            assert flags["--images"].type is Path, f"{command}: --images is a folder; a count is --n-images"


def test_shared_flags_carry_the_shared_help_text(parsers):
    for command, parser in parsers.items():
        for name, action in cli.shared_flags(parser).items():
            assert action.help.startswith(cli.VOCABULARY[name].help), f"{command} {name}: {action.help!r}"
            assert action.help == cli.VOCABULARY[name].help or action.help[len(cli.VOCABULARY[name].help):] \
                .startswith(" (default: "), f"{command} {name}: only a default may follow the shared text"


def test_every_command_doing_long_work_can_be_quiet(parsers):
    loud = [c for c, parser in parsers.items() if c not in QUICK and "--quiet" not in _flags(parser)]
    assert not loud, f"no --quiet on {loud}"


def test_readme_table_of_shared_flags_is_the_vocabulary(parsers):
    usage = {}
    for command, parser in parsers.items():
        for name in cli.shared_flags(parser):
            usage.setdefault(name, []).append(command)
    expected = cli.markdown_table(usage, COMMANDS)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Shared command-line flags", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == expected, f"README.md's table of shared flags is stale; replace it with:\n{expected}"
