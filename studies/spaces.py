"""Search spaces, written as specs: parameter name -> Optuna distribution.

Each model's space is a plain dict so it reads like the paper's list and so a user can narrow it from
the command line (`--params learning_rate,fc_dropout`): the others then keep the profile's defaults.
Names are the keyword arguments of `mcn.train.TrainConfig` (`TRAIN_PARAMS`) and of
`mcn.models.create_model("microcrystalnet", ...)` (the rest), or of `features.zoo.create_classifier`.
Layer lists (filters, kernel sizes, FC widths) are categorical strings such as "7,5,3,3", because
Optuna stores categorical choices as scalars; `split_params` turns them back into tuples.
"""

from __future__ import annotations

import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution as Choice
from optuna.distributions import FloatDistribution as Float
from optuna.distributions import IntDistribution as Int

TRAIN_PARAMS = ("learning_rate", "batch_size", "optimizer", "input_size", "epochs", "schedule", "label_smoothing",
                "test_flips")
"""MicroCrystalNet parameters that belong to the training protocol (`TrainConfig`), not the model."""

LIST_PARAMS = ("filters", "kernel_sizes", "fc_units")
"""Model parameters searched as comma-separated strings and passed on as tuples of ints."""

MICROCRYSTALNET: dict[str, BaseDistribution] = {
    # Protocol (paper 4.3: Adam at 1e-3 chosen over SGD and RMSprop; batch 16..256; 16..128 px).
    "learning_rate": Float(1e-4, 1e-2, log=True),
    "batch_size": Choice([16, 32, 64, 128, 256]),
    "optimizer": Choice(["adam", "sgd", "rmsprop"]),
    "input_size": Choice([16, 32, 64, 128]),
    # Architecture (section 3: widths 32 -> 128, kernels 7/5/3, NSR block, dropout 0.2..0.7).
    "fc_dropout": Float(0.2, 0.7),
    "conv_dropout": Float(0.0, 0.5),
    "filters": Choice(["16,32,64,64", "32,64,128,128", "32,64,128,256", "64,128,256,256"]),
    "kernel_sizes": Choice(["7,5,3,3", "5,5,3,3", "3,3,3,3", "7,7,5,5", "5,5,5,5"]),
    "depth": Int(2, 5),
    "pca_dim": Choice([32, 64, 128, 256]),
    "l1_strength": Float(1e-6, 1e-2, log=True),
    "fc_units": Choice(["1024,256", "512,128", "256,64"]),
}

CLASSIFIERS: dict[str, dict[str, BaseDistribution]] = {
    "logreg": {"C": Float(1e-3, 1e3, log=True)},
    "svm_rbf": {"estimator__C": Float(1e-2, 1e3, log=True),  # an SVC inside Platt calibration
                "estimator__gamma": Float(1e-4, 1e0, log=True)},
    "random_forest": {"n_estimators": Int(100, 800, step=100), "max_depth": Int(3, 30),
                      "max_features": Float(0.1, 1.0), "min_samples_leaf": Int(1, 10)},
    "extra_trees": {"n_estimators": Int(100, 800, step=100), "max_depth": Int(3, 30),
                    "max_features": Float(0.1, 1.0), "min_samples_leaf": Int(1, 10)},
    "knn": {"n_neighbors": Int(1, 50), "weights": Choice(["uniform", "distance"])},
    "hist_gb": {"learning_rate": Float(1e-2, 0.5, log=True), "max_leaf_nodes": Int(8, 128, log=True),
                "l2_regularization": Float(1e-6, 10.0, log=True)},
    "xgboost": {"n_estimators": Int(50, 600, step=50), "max_depth": Int(2, 10),
                "learning_rate": Float(1e-2, 0.5, log=True), "subsample": Float(0.5, 1.0),
                "colsample_bytree": Float(0.3, 1.0), "reg_lambda": Float(1e-3, 10.0, log=True)},
}


def space_for(model: str) -> dict[str, BaseDistribution]:
    """The full search space of a model name (`microcrystalnet` or a classifier of the zoo)."""
    if model == "microcrystalnet":
        return dict(MICROCRYSTALNET)
    if model in CLASSIFIERS:
        return dict(CLASSIFIERS[model])
    raise ValueError(f"unknown model {model!r}; choose from microcrystalnet, {', '.join(CLASSIFIERS)}")


def narrow(space: dict[str, BaseDistribution], params: list[str] | None) -> dict[str, BaseDistribution]:
    """Keep only the named parameters; an unknown name or an empty result is an error."""
    if params is None:
        chosen = space
    else:
        unknown = sorted(set(params) - set(space))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; this space has {', '.join(space)}")
        chosen = {name: space[name] for name in params}
    if not chosen:
        raise ValueError("the search space is empty: name at least one parameter to search")
    return chosen


def suggest(trial: optuna.Trial, space: dict[str, BaseDistribution]) -> dict:
    """Sample every parameter of `space` in `trial` through the public `suggest_*` calls."""
    values = {}
    for name, dist in space.items():
        if isinstance(dist, Float):
            values[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
        elif isinstance(dist, Int):
            values[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
        else:
            values[name] = trial.suggest_categorical(name, dist.choices)
    return values


def split_params(values: dict) -> tuple[dict, dict]:
    """MicroCrystalNet values -> (TrainConfig overrides, create_model hparams), lists decoded."""
    train = {k: v for k, v in values.items() if k in TRAIN_PARAMS}
    hparams = {k: _as_ints(v) if k in LIST_PARAMS and isinstance(v, str) else v
               for k, v in values.items() if k not in TRAIN_PARAMS}
    return train, hparams


def _as_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))
