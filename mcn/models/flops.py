"""Analytical FLOPs per crystal (one input, inference) of a Keras model.

Convention: a multiply-add counts as 2 FLOPs (FLOPs = 2 x MACs), as in most papers that quote
"FLOPs". Counted per layer, from the layer's input and output shapes:

* Conv2D, DepthwiseConv2D, SeparableConv2D, Dense: 2 x MACs, plus 1 per output for the bias;
* BatchNormalization: 2 per element (inference folds it into one scale and one shift);
* Max/AveragePooling2D: 1 per window element per output; global pooling: 1 per input element;
* the NSR layers: z-score 2 per feature, PCA 1 per feature (centring) + 2 x MACs, L1 gate 1 per feature.

Activations, element-wise adds/multiplies, concatenation, padding, rescaling and dropout are not
counted (they are small next to the convolutions and the usual tables leave them out). Nested
functional / sequential models are walked recursively.
"""

from __future__ import annotations

import math

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras
from keras import layers

from mcn.models.nsr import L1Gate, PCAProjection, ZScore


def count_flops(model: keras.Model) -> int:
    """FLOPs (2 per multiply-add) to classify one crystal with `model`."""
    return sum(_layer_flops(layer) for layer in model.layers)


def _layer_flops(layer: keras.layers.Layer) -> int:
    if isinstance(layer, keras.Model):
        return count_flops(layer)
    for kind, rule in _RULES:
        if isinstance(layer, kind):
            return int(rule(layer, _shape(layer.input), _shape(layer.output)))
    return 0


def _shape(tensor) -> tuple[int, ...]:
    """Per-sample shape (batch axis dropped)."""
    return tuple(int(d) for d in tensor.shape[1:])


def _channels_axis(layer) -> int:
    return 0 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def _bias(layer, out: tuple[int, ...]) -> int:
    return math.prod(out) if layer.use_bias else 0


def _conv(layer, inp, out) -> int:
    axis = _channels_axis(layer)
    spatial = math.prod(out) // out[axis]
    macs = spatial * out[axis] * math.prod(layer.kernel_size) * inp[axis] // layer.groups
    return 2 * macs + _bias(layer, out)


def _depthwise(layer, inp, out) -> int:
    macs = math.prod(out) * math.prod(layer.kernel_size)
    return 2 * macs + _bias(layer, out)


def _separable(layer, inp, out) -> int:
    axis = _channels_axis(layer)
    spatial = math.prod(out) // out[axis]
    depth_channels = inp[axis] * layer.depth_multiplier
    depthwise = spatial * depth_channels * math.prod(layer.kernel_size)
    pointwise = spatial * depth_channels * out[axis]
    return 2 * (depthwise + pointwise) + _bias(layer, out)


def _dense(layer, inp, out) -> int:
    return 2 * math.prod(inp) * layer.units + _bias(layer, out)


def _pool(layer, inp, out) -> int:
    return math.prod(out) * math.prod(layer.pool_size)


def _per_input(factor: int):
    return lambda layer, inp, out: factor * math.prod(inp)


def _pca(layer, inp, out) -> int:
    return math.prod(inp) + 2 * math.prod(inp) * layer.n_components


# Order matters: the first matching class wins.
_RULES = (
    (layers.SeparableConv2D, _separable),
    (layers.DepthwiseConv2D, _depthwise),
    (layers.Conv2D, _conv),
    (layers.Dense, _dense),
    (layers.BatchNormalization, _per_input(2)),
    (layers.MaxPooling2D, _pool),
    (layers.AveragePooling2D, _pool),
    (layers.GlobalAveragePooling2D, _per_input(1)),
    (layers.GlobalMaxPooling2D, _per_input(1)),
    (ZScore, _per_input(2)),
    (PCAProjection, _pca),
    (L1Gate, _per_input(1)),
)
