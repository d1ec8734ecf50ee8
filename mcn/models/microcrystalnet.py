"""MicroCrystalNet as the paper describes it (section 3, Fig. 4), not the authors' 3-layer script.

Stem: `depth` conv blocks Conv -> BatchNorm -> ReLU -> MaxPool(2) -> Dropout, filters 32 -> 64 ->
128 -> 128 with kernels 7, 5, 3, 3 (large kernels first, where the maps are large, so the receptive
field covers the crystal early; the paper mixes 3x3, 5x5 and 7x7 without giving the order).
Flatten -> NSR block (z-score, PCA, L1 selection; see `mcn.models.nsr`) -> FC 1024 and FC 256, each
Dense -> BatchNorm -> ReLU -> Dropout(0.5) -> softmax. The 256-d FC output is the `embedding` layer.

Default input 64x64x1 (the authors' resolution): the stem then yields 4x4x128 = 2,048 features, which
the PCA reduces to 128. Every architectural choice is a keyword argument so studies can ablate it.
"""

from __future__ import annotations

from collections.abc import Sequence

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras
from keras import layers

from mcn.models.nsr import nsr_block
from mcn.models.registry import EMBEDDING_LAYER, PREDICTIONS_LAYER, check_min_size, register_model


@register_model(input_size=64, min_input_size=16)
def microcrystalnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    filters: Sequence[int] = (32, 64, 128, 128),
    kernel_sizes: Sequence[int] = (7, 5, 3, 3),
    depth: int | None = None,
    conv_dropout: float = 0.25,
    zscore: bool = True,
    pca: bool = True,
    pca_dim: int = 128,
    pca_trainable: bool = False,
    l1: bool = True,
    l1_strength: float = 1e-4,
    fc_units: Sequence[int] = (1024, 256),
    fc_dropout: float = 0.5,
) -> keras.Model:
    """Build MicroCrystalNet.

    `depth` (number of conv blocks) defaults to `len(filters)`; a different value truncates
    `filters` / `kernel_sizes` or extends them by repeating their last entry, so a study can ablate
    depth with one integer. The NSR stages switch off one by one (`zscore`, `pca`, `l1`); `pca_dim`
    must not exceed the flattened stem features, nor (checked by `prepare_model`) the number of
    training patches. `min_input_size` (16) is for the default depth: the stem needs 2**depth px.
    """
    plan = _stem_plan(_positive_ints("filters", filters), _positive_ints("kernel_sizes", kernel_sizes), depth)
    check_min_size("microcrystalnet", input_shape, 2 ** len(plan))
    fc_units = _positive_ints("fc_units", fc_units)
    if pca and (isinstance(pca_dim, bool) or not isinstance(pca_dim, int) or pca_dim < 1):
        raise ValueError(f"pca_dim must be a positive integer; got {pca_dim!r}.")
    if l1 and l1_strength < 0:
        raise ValueError(f"l1_strength must be >= 0; got {l1_strength!r}.")

    inputs = keras.Input(shape=input_shape, name="crystal")
    x = inputs
    for index, (width, kernel) in enumerate(plan, start=1):
        x = _conv_block(x, width, kernel, conv_dropout, f"block{index}")
    x = layers.Flatten(name="flatten")(x)
    x = nsr_block(
        x,
        zscore=zscore,
        pca=pca,
        pca_dim=pca_dim,
        pca_trainable=pca_trainable,
        l1=l1,
        l1_strength=l1_strength,
    )
    for index, units in enumerate(fc_units, start=1):
        last = index == len(fc_units)
        x = layers.Dense(units, name=f"fc{index}_dense")(x)
        x = layers.BatchNormalization(name=f"fc{index}_bn")(x)
        x = layers.ReLU(name=EMBEDDING_LAYER if last else f"fc{index}_relu")(x)
        x = layers.Dropout(fc_dropout, name=f"fc{index}_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=PREDICTIONS_LAYER)(x)
    return keras.Model(inputs, outputs, name="microcrystalnet")


def _conv_block(x, width: int, kernel: int, dropout: float, name: str):
    """Conv -> BatchNorm -> ReLU -> MaxPool(2) -> Dropout (the paper's order: BN before ReLU)."""
    x = layers.Conv2D(width, kernel, padding="same", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return layers.Dropout(dropout, name=f"{name}_dropout")(x)


def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    """A non-empty list of positive integers, or a message naming the argument."""
    valid = isinstance(values, (list, tuple)) and len(values) > 0
    if not valid or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive integers; got {values!r}.")
    return list(values)


def _stem_plan(filters: list[int], kernel_sizes: list[int], depth: int | None) -> list[tuple[int, int]]:
    """(filters, kernel) per conv block; `depth` truncates or extends the lists."""
    if depth is None:
        if len(filters) != len(kernel_sizes):
            raise ValueError(
                f"filters ({len(filters)} blocks) and kernel_sizes ({len(kernel_sizes)} blocks) must "
                "have the same length, or pass depth to truncate/extend both."
            )
        depth = len(filters)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer; got {depth!r}.")
    return [
        (filters[min(i, len(filters) - 1)], kernel_sizes[min(i, len(kernel_sizes) - 1)])
        for i in range(depth)
    ]
