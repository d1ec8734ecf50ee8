"""The paper's five baseline CNNs from `keras.applications`, for grey crystal patches in [0, 1].

Each model is: grey input -> replicated to RGB -> the input scaling the backbone's ImageNet weights
expect -> backbone (include_top=False, pooling="avg"; a nested model, so a local `*_notop.h5`
ImageNet file loads into it exactly as keras.applications loads its own) -> `embedding` (the
global-average-pooled features) -> Dense softmax `predictions`.

Weights: `None` (from scratch, the default; nothing can be downloaded here) or the path of a local
weights file. `"imagenet"` is refused because it would download.

Default input 96x96: the smallest multiple of 32 (the backbones' total stride) that InceptionV3
accepts (>= 75 px), so all five baselines run at one size and stay affordable on a CPU. The
others accept >= 32 px (smaller sizes collapse their final feature map).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras
from keras import layers

from mcn.errors import DataError
from mcn.models.registry import (
    EMBEDDING_LAYER,
    PREDICTIONS_LAYER,
    check_min_size,
    model_defaults,
    register_model,
)

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

Weights = str | os.PathLike | None


def _caffe(x):
    """VGG16/ResNet50: 0-255 BGR minus the ImageNet mean (grey, so the channel order is moot)."""
    return layers.Normalization(
        mean=[m / 255.0 for m in _CAFFE_MEAN_BGR], variance=[(1 / 255.0) ** 2] * 3, name="imagenet_scale"
    )(x)


def _tf(x):
    """InceptionV3: [-1, 1]."""
    return layers.Rescaling(2.0, offset=-1.0, name="imagenet_scale")(x)


def _torch(x):
    """DenseNet121: ImageNet mean/std per channel."""
    return layers.Normalization(
        mean=list(_TORCH_MEAN), variance=[s**2 for s in _TORCH_STD], name="imagenet_scale"
    )(x)


def _efficientnet(x):
    """EfficientNetB0 rescales by 1/255 and normalises inside itself: hand it 0-255.

    (With a local ImageNet file, keras' extra `weights="imagenet"`-only rescale by 1/sqrt(std) is
    not applied; fine-tuning absorbs that small input-scale difference.)
    """
    return layers.Rescaling(255.0, name="imagenet_scale")(x)


def _baseline(
    name: str,
    application: Callable[..., keras.Model],
    scale: Callable,
    input_shape: tuple[int, int, int],
    num_classes: int,
    weights: Weights,
) -> keras.Model:
    """Wrap one keras.applications backbone with grey->RGB input and a softmax head."""
    check_min_size(name, input_shape, model_defaults(name).min_input_size)
    if input_shape[2] != 1:
        raise ValueError(
            f"model {name!r} takes grey patches (channels=1, replicated to RGB inside); "
            f"got input_shape={tuple(input_shape)}."
        )
    weights = _check_weights(weights)
    inputs = keras.Input(shape=input_shape, name="crystal")
    rgb = layers.Concatenate(axis=-1, name="gray_to_rgb")([inputs, inputs, inputs])
    try:
        backbone = application(
            include_top=False,
            weights=weights,
            input_shape=(*input_shape[:2], 3),
            pooling="avg",
            name=f"{name}_backbone",
        )
    except (ValueError, OSError) as exc:
        if weights is None:
            raise
        raise DataError(f"{weights}: cannot load as {name} weights (include_top=False): {exc}") from exc
    features = layers.Identity(name=EMBEDDING_LAYER)(backbone(scale(rgb)))
    outputs = layers.Dense(num_classes, activation="softmax", name=PREDICTIONS_LAYER)(features)
    return keras.Model(inputs, outputs, name=name)


def _check_weights(weights: Weights) -> str | None:
    """None or an existing local file; 'imagenet' is refused (it would download)."""
    if weights is None:
        return None
    if weights == "imagenet":
        raise ValueError(
            "weights='imagenet' would download; pass None (from scratch) or the path of a local "
            "weights file (e.g. the keras.applications *_notop.h5)."
        )
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise DataError(f"{path}: weights file not found")
    return path


@register_model(input_size=96, min_input_size=32)
def vgg16(input_shape: tuple[int, int, int], num_classes: int, *, weights: Weights = None) -> keras.Model:
    """VGG16 (Simonyan & Zisserman 2015)."""
    return _baseline("vgg16", keras.applications.VGG16, _caffe, input_shape, num_classes, weights)


@register_model(input_size=96, min_input_size=32)
def resnet50(input_shape: tuple[int, int, int], num_classes: int, *, weights: Weights = None) -> keras.Model:
    """ResNet50 (He et al. 2016)."""
    return _baseline("resnet50", keras.applications.ResNet50, _caffe, input_shape, num_classes, weights)


@register_model(input_size=96, min_input_size=75)
def inceptionv3(
    input_shape: tuple[int, int, int], num_classes: int, *, weights: Weights = None
) -> keras.Model:
    """InceptionV3 (Szegedy et al. 2016); needs >= 75 px."""
    return _baseline(
        "inceptionv3", keras.applications.InceptionV3, _tf, input_shape, num_classes, weights
    )


@register_model(input_size=96, min_input_size=32)
def densenet121(
    input_shape: tuple[int, int, int], num_classes: int, *, weights: Weights = None
) -> keras.Model:
    """DenseNet121 (Huang et al. 2017)."""
    return _baseline(
        "densenet121", keras.applications.DenseNet121, _torch, input_shape, num_classes, weights
    )


@register_model(input_size=96, min_input_size=32)
def efficientnetb0(
    input_shape: tuple[int, int, int], num_classes: int, *, weights: Weights = None
) -> keras.Model:
    """EfficientNetB0 (Tan & Le 2019)."""
    return _baseline(
        "efficientnetb0",
        keras.applications.EfficientNetB0,
        _efficientnet,
        input_shape,
        num_classes,
        weights,
    )
