"""The suite's command-line vocabulary: one function per shared flag, each with its one help text.

Every command (mcn's own, `benchmarks.*`, `studies.*`, `features.export`) adds its shared flags
through these, so a flag means the same thing and reads the same in every `--help`, and the
README's table of shared flags is rendered from the same texts (`markdown_table`). A command
passes its own default; `default_text` says in words a default that is computed at run time.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Flag:
    """A shared flag: its name, the placeholder of its value, and its one help text."""

    name: str
    metavar: str | None
    help: str


VOCABULARY: dict[str, Flag] = {f.name: f for f in (
    Flag("--data", "DIR", "a data set folder, scene or patch format"),
    Flag("--images", "DIR", "a folder of raw SEM images (a count of images is --n-images)"),
    Flag("--n-images", "N", "how many images"),
    Flag("--out", "PATH", "where the results are written"),
    Flag("--overwrite", None, "replace an earlier run's outputs at --out: the file it names, or in a folder the "
                              "suite's own files only, never others there"),
    Flag("--profile", None, "compute budget"),
    Flag("--seed", "N", "one seed fixes every random choice (data, folds, balancing, sampling, weights)"),
    Flag("--folds", "K", "grouped cross-validation folds"),
    Flag("--group-by", None, "cross-validation group: rock sample or source image"),
    Flag("--jobs", "N", "parallel workers"),
    Flag("--quiet", None, "no progress bars"),
    Flag("--models", "LIST", "comma list in the suite's one grammar: CNN names (microcrystalnet, vgg16, ...), "
                             "CLASSIFIER:FEATURES (xgboost:hybrid), a classifier (all its feature sets), a feature "
                             "set (handcrafted, embedding, hybrid) or a family (all, cnn, baselines, classical); "
                             "a command refuses the kinds it does not run"),
    Flag("--backend", None, "Keras backend (jax is the fastest on a GPU; auto, where offered: the fastest "
                            "measured on this machine)"),
    Flag("--sam-checkpoint", "FILE", "your SAM weights file (never downloaded)"),
    Flag("--sam-model-type", None, "SAM architecture of the checkpoint"),
    Flag("--pixel-size-nm", "NM", "pixel size in nm"),
    Flag("--crystal-size-nm", "MIN,MAX", "diameters in nm of the smallest and largest crystals worth measuring: "
                                         "MIN,MAX (e.g. the 5th and 95th percentile; not hard bounds: outlines up "
                                         "to twice MAX are kept), 'carbonate' (500,10000) or 'auto' (the carbonate "
                                         "range on each image it fits, else that image's own estimate)"),
    Flag("--size-features", None, "crystal size among the handcrafted inputs: nm (physical), px, none; auto: nm "
                                  "where every crystal has a pixel size, px where none has"),
    Flag("--segmenter", None, "how crystals are found in an image"),
    Flag("--segmenter-model", "FILE", "model file of python -m mcn.segment.train, for --segmenter learned"),
    Flag("--val-fraction", "F", "share of the images held out for validation"),
    Flag("--tracking-uri", "URI", "MLflow store"),
    Flag("--rank-metric", "METRIC", "metric that ranks the models and drives the tests"),
    Flag("--rope", "R", "region of practical equivalence of the Bayesian correlated t-test, in units of the "
                        "rank metric"),
    Flag("--epochs", "N", "training epochs"),
    Flag("--input-size", "PX", "patch side in pixels"),
    Flag("--hparam", "KEY=VALUE", "model constructor argument, repeatable (values parsed as JSON when possible)"),
    Flag("--device", None, "torch device for SAM: cuda or cpu"),
    Flag("--compile-cache", "DIR", "persistent XLA compilation cache (jax backend): each model compiles once per "
                                   "input and batch shape, not once per fold or per run; other backends ignore it"),
)}
SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")


def _add(parser, name: str, default=None, default_text: str | None = None, **kwargs) -> argparse.Action:
    """Add shared flag `name` with its help text, then its default ('%(default)s' or `default_text`)."""
    flag = VOCABULARY[name]
    text = flag.help
    if default_text:
        text += f" (default: {default_text})"
    elif default is not None and kwargs.get("action") not in ("store_true", "append"):
        text += " (default: %(default)s)"
    if flag.metavar and "action" not in kwargs and "choices" not in kwargs:
        kwargs.setdefault("metavar", flag.metavar)
    if default is not None:
        kwargs["default"] = default
    return parser.add_argument(name, help=text, **kwargs)


def data(parser, default_text: str | None = "the cached synthetic data set", **kwargs) -> argparse.Action:
    return _add(parser, "--data", default_text=None if kwargs.get("required") else default_text, **kwargs)


def images(parser, **kwargs) -> argparse.Action:
    return _add(parser, "--images", type=Path, **kwargs)


def n_images(parser, default: int | None = None, default_text: str | None = None) -> argparse.Action:
    return _add(parser, "--n-images", default, default_text, type=int)


def out(parser, **kwargs) -> argparse.Action:
    """`metavar=` names a file where the command writes one (FILE.skops, TABLE.csv)."""
    return _add(parser, "--out", **kwargs)


def overwrite(parser) -> argparse.Action:
    return _add(parser, "--overwrite", action="store_true")


def profile(parser, default: str | None = None,
            default_text: str | None = "paper on a GPU, quick otherwise") -> argparse.Action:
    from mcn.experiment.profiles import PROFILES

    return _add(parser, "--profile", default, None if default else default_text, choices=tuple(PROFILES))


def seed(parser, default: int = 0) -> argparse.Action:
    return _add(parser, "--seed", default, type=int)


def folds(parser, default: int = 5, container=None) -> argparse.Action:
    """`container`: a mutually exclusive group the flag belongs to (mcn.train's --folds | --holdout)."""
    return _add(container or parser, "--folds", default, type=int)


def group_by(parser) -> argparse.Action:
    from mcn.data.splits import GROUPINGS

    return _add(parser, "--group-by", default_text="sample where the data records enough samples, else image; "
                                                   "the command says which and why", choices=GROUPINGS)


def jobs(parser, default: int | None = None) -> argparse.Action:
    """Default: the CPU count."""
    if default is not None:
        return _add(parser, "--jobs", default, type=int)
    count = os.cpu_count() or 1
    return _add(parser, "--jobs", count, f"the CPU count, {count}", type=int)


def quiet(parser) -> argparse.Action:
    return _add(parser, "--quiet", action="store_true")


def models(parser, default: str | None = None, default_text: str | None = None) -> argparse.Action:
    return _add(parser, "--models", default, default_text)


def resolve_models(spec: str | None, profile, feature_sets: Sequence[str],
                   kinds: Sequence[str] = ("cnn", "classical")) -> list[str]:
    """A `--models` value by the one grammar (`mcn.experiment.profiles.resolve_models`) for a command
    whose classical rows can use only `feature_sets`: a classifier, a family or the default then
    means its rows on those; a feature set outside them, named outright, is refused."""
    from features.embeddings import FEATURE_SETS
    from mcn.experiment.profiles import model_kind, resolve_models as resolve

    named = [item.strip() for item in (spec or "").split(",") if item.strip()]
    outside = [item for item in named if (item.partition(":")[2] or item) in set(FEATURE_SETS) - set(feature_sets)]
    if outside:
        raise ValueError(f"--models {', '.join(outside)}: this command runs the {', '.join(feature_sets)} "
                         "feature set(s) only")
    return [m for m in resolve(spec, profile, kinds=kinds) if model_kind(m) == "cnn" or m.partition(":")[2]
            in feature_sets]


def backend(parser, auto: bool = False) -> argparse.Action:
    """The Keras backend, default $KERAS_BACKEND else torch; `auto` offers the measured fastest."""
    import mcn

    from mcn.train.backend import AUTO

    choices = (*mcn.BACKENDS, AUTO) if auto else mcn.BACKENDS
    return _add(parser, "--backend", os.environ.get("KERAS_BACKEND", "torch"), choices=choices)


def sam(parser, required: bool = False, default_text: str | None = None,
        model_types: Sequence[str] = SAM_MODEL_TYPES) -> None:
    """--sam-checkpoint and --sam-model-type, the pair every SAM path takes; `default_text`: what
    the command does without a checkpoint; `model_types`: segment_anything's registry where the
    command has it imported already (it takes seconds to import)."""
    _add(parser, "--sam-checkpoint", default_text=default_text, required=required)
    _add(parser, "--sam-model-type", "vit_b", choices=tuple(model_types))


def pixel_size_nm(parser, default: float | None = None, default_text: str | None = None) -> argparse.Action:
    """`default_text` says which pixel size wins: this flag, images.csv or the image's metadata."""
    return _add(parser, "--pixel-size-nm", default, default_text, type=float)


def crystal_size_nm(parser, default_text: str) -> argparse.Action:
    return _add(parser, "--crystal-size-nm", default_text=default_text)


def size_features(parser, choices: Sequence[str] | None = None) -> argparse.Action:
    from features.handcrafted import SIZE_FEATURES

    return _add(parser, "--size-features", "auto", choices=tuple(choices or SIZE_FEATURES))


def segmenter(parser, names: Sequence[str], refuse_here: bool = True) -> None:
    """--segmenter (one of `names`) and --segmenter-model (the file a learned segmenter needs);
    `refuse_here=False` leaves an unknown name to the segmenter factory's one-line error."""
    check = {"choices": tuple(names)} if refuse_here else {"metavar": "{" + ",".join(names) + "}"}
    _add(parser, "--segmenter", "classical", **check)
    _add(parser, "--segmenter-model", type=Path)


def val_fraction(parser, default: float, container=None) -> argparse.Action:
    return _add(container or parser, "--val-fraction", default, type=float)


def tracking_uri(parser) -> argparse.Action:
    from mcn.experiment.tracking import DEFAULT_TRACKING_URI

    return _add(parser, "--tracking-uri", default_text=DEFAULT_TRACKING_URI)


def rank_metric(parser) -> argparse.Action:
    from mcn.experiment.comparison import DEFAULT_RANK_METRIC

    return _add(parser, "--rank-metric", DEFAULT_RANK_METRIC)


def rope(parser) -> argparse.Action:
    from mcn.experiment.comparison import DEFAULT_ROPE

    return _add(parser, "--rope", DEFAULT_ROPE, type=float)


def epochs(parser, default: int | None = None, default_text: str | None = None) -> argparse.Action:
    """Default: the profile's, unless the command passes its own."""
    return _add(parser, "--epochs", default, default_text or (None if default else "the profile's"), type=int)


def input_size(parser, default_text: str) -> argparse.Action:
    return _add(parser, "--input-size", default_text=default_text, type=int)


def hparam(parser) -> argparse.Action:
    return _add(parser, "--hparam", [], action="append", metavar=VOCABULARY["--hparam"].metavar)


def device(parser) -> argparse.Action:
    return _add(parser, "--device", default_text="cuda when available")


def compile_cache(parser, default_text: str | None = None) -> argparse.Action:
    return _add(parser, "--compile-cache", default_text=default_text)


def shared_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The shared flags `parser` takes, by name."""
    return {name: action for action in parser._actions for name in action.option_strings if name in VOCABULARY}


def markdown_table(usage: Mapping[str, Sequence[str]], commands: Sequence[str]) -> str:
    """The README's table of shared flags: each flag, its one help text, and the commands of
    `commands` that take it (`usage`: flag -> commands)."""
    rows = ["| flag | meaning | on |", "| --- | --- | --- |"]
    for flag in VOCABULARY.values():
        on = [c for c in commands if c in usage.get(flag.name, ())]
        if not on:
            continue
        rest = [c for c in commands if c not in on]
        where = (f"all but {', '.join(f'`{c}`' for c in rest)}" if len(on) > len(commands) / 2 and rest
                 else "all" if not rest else ", ".join(f"`{c}`" for c in on))
        name = f"`{flag.name} {flag.metavar}`" if flag.metavar else f"`{flag.name}`"
        meaning = flag.help.replace("|", "\\|")
        rows.append(f"| {name} | {meaning} | {where} |")
    return "\n".join(rows)
