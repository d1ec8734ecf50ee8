"""One registry for every CNN of the suite (timm style): register by decorator, build by name.

A builder is a function `builder(input_shape, num_classes, *, hparam=default, ...) -> keras.Model`
registered under its own name. Its keyword-only arguments are the model's hyper-parameters, so the
registry can list them (`model_defaults(name).hparams`) and reject unknown ones before building.
Every registered model names its penultimate feature layer `EMBEDDING_LAYER` and its softmax layer
`PREDICTIONS_LAYER`, which is what `embedding_model` and the evaluation code rely on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral
from types import MappingProxyType
from typing import Any

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras

EMBEDDING_LAYER = "embedding"
PREDICTIONS_LAYER = "predictions"

Builder = Callable[..., keras.Model]


@dataclass(frozen=True)
class ModelDefaults:
    """A model's default configuration: input size, smallest accepted size, hyper-parameters."""

    name: str
    input_size: int
    min_input_size: int
    channels: int = 1
    hparams: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, self.channels)


_BUILDERS: dict[str, Builder] = {}
_DEFAULTS: dict[str, ModelDefaults] = {}


def register_model(*, input_size: int, min_input_size: int) -> Callable[[Builder], Builder]:
    """Register a builder under its function name with its default input size."""

    def decorate(builder: Builder) -> Builder:
        params = inspect.signature(builder).parameters.values()
        hparams = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        name = builder.__name__
        _BUILDERS[name] = builder
        _DEFAULTS[name] = ModelDefaults(
            name, input_size, min_input_size, hparams=MappingProxyType(hparams)
        )
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_BUILDERS)


def model_defaults(name: str) -> ModelDefaults:
    """The default configuration of a registered model."""
    _check_name(name)
    return _DEFAULTS[name]


def create_model(
    name: str,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int = 4,
    **hparams: Any,
) -> keras.Model:
    """Build a registered model; `input_shape=None` uses the model's default (size, size, 1)."""
    defaults = model_defaults(name)
    unknown = sorted(set(hparams) - set(defaults.hparams))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {', '.join(unknown)} for model {name!r}; "
            f"it accepts: {', '.join(defaults.hparams) or 'none'}."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}.")
    shape = defaults.input_shape if input_shape is None else _check_shape(input_shape)
    return _BUILDERS[name](shape, num_classes, **hparams)


def embedding_model(model: keras.Model) -> keras.Model:
    """A model mapping the inputs to the penultimate feature vector (the `embedding` layer)."""
    try:
        layer = model.get_layer(EMBEDDING_LAYER)
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no {EMBEDDING_LAYER!r} layer; build it with "
            "mcn.models.create_model."
        ) from None
    return keras.Model(model.input, layer.output, name=f"{model.name}_embedding")


def check_min_size(name: str, input_shape: tuple[int, int, int], min_size: int) -> None:
    """Refuse inputs smaller than a model can reduce (the message repeats what was received)."""
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"model {name!r} needs inputs of at least {min_size}x{min_size} pixels; "
            f"got input_shape={tuple(input_shape)}."
        )


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}.")


def _check_shape(input_shape: Any) -> tuple[int, int, int]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
    valid = all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in shape)
    if len(shape) != 3 or not valid:
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive integers; got {input_shape!r}."
        )
    return tuple(int(v) for v in shape)
