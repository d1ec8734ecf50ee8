"""Re-estimate BatchNorm moving statistics from data ("precise BN", Wu & Johnson 2021).

Keras BatchNorm layers track their inference statistics as a moving average with momentum 0.99:
after a few hundred steps they still weigh their initial values (mean 0, variance 1) by
0.99**steps, so a CNN trained from scratch for one or two epochs predicts with statistics that
belong to no data (a 1-epoch EfficientNetB0 collapsed to one class). One pass over training patches
in training mode, dropout off, each layer's momentum set so that its statistics become the plain
average over the batches, sets every BatchNorm at once to what it sees in training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras


def recalibrate_batchnorm(model: keras.Model, x: np.ndarray, batch_size: int = 256,
                          max_samples: int = 1024, seed: int = 0) -> int:
    """Set every BatchNorm's moving mean and variance to the average of its batch statistics over
    at most `max_samples` patches of `x` (drawn with `seed`); returns how many layers were set.

    Weights, momentum and dropout rates are left as they were. Use training patches only.
    """
    layers = list(_all_layers(model))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or len(x) == 0:
        return 0
    x = sample_patches(np.asarray(x, dtype="float32"), max_samples, seed)
    dropouts = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    momenta, rates = [n.momentum for n in norms], [d.rate for d in dropouts]
    try:
        for d in dropouts:
            d.rate = 0.0
        with _no_grad():
            for k, start in enumerate(range(0, len(x), batch_size)):
                for n in norms:  # moving = moving * m + batch * (1 - m): a running mean of batches
                    n.momentum = k / (k + 1)
                model(x[start:start + batch_size], training=True)
    finally:
        for n, m in zip(norms, momenta):
            n.momentum = m
        for d, r in zip(dropouts, rates):
            d.rate = r
    return len(norms)


def sample_patches(x: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """At most `max_samples` rows of `x`, drawn with `seed`, in their original order."""
    if len(x) <= max_samples:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), max_samples, replace=False))]


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _no_grad() -> contextlib.AbstractContextManager:
    """The torch backend would otherwise record a graph for backpropagation."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()
