"""Model zoo of the suite: MicroCrystalNet (with its NSR block) and five keras.applications baselines.

Public API (the training, evaluation and benchmark code builds on these names only):
`create_model`, `list_models`, `model_defaults`, `prepare_model`, `embedding_model`, `count_flops`,
`recalibrate_batchnorm`.
Importing this package registers every model and the custom layers (so saved `.keras` models load).
"""

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
from mcn.models import baselines, microcrystalnet  # noqa: F401  (registers the models)
from mcn.models.batchnorm import recalibrate_batchnorm
from mcn.models.flops import count_flops
from mcn.models.nsr import prepare_model, selected_features
from mcn.models.registry import (
    EMBEDDING_LAYER,
    PREDICTIONS_LAYER,
    ModelDefaults,
    create_model,
    embedding_model,
    list_models,
    model_defaults,
    register_model,
)

__all__ = [
    "EMBEDDING_LAYER",
    "PREDICTIONS_LAYER",
    "ModelDefaults",
    "count_flops",
    "create_model",
    "embedding_model",
    "list_models",
    "model_defaults",
    "prepare_model",
    "recalibrate_batchnorm",
    "register_model",
    "selected_features",
]
