"""The classical model zoo: scikit-learn pipelines built by name, every seed fixed.

Imputation and scaling live inside each pipeline, so they are fitted on a fold's training part
only (nothing is learned from test crystals). Median imputation fills the NaN that morphometry
returns for unmeasurable crystals; scaling matters for the distance- and margin-based models and
does no harm to the tree models, so every pipeline has the same shape.
"""

from __future__ import annotations

import os
from typing import Callable

from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

Builder = Callable[[int, int], ClassifierMixin]
"""`builder(seed, n_threads) -> estimator`: n_threads for the models that take a thread count."""

_REGISTRY: dict[str, Builder] = {}


def register(builder: Builder) -> Builder:
    """Register a `builder(seed, n_threads) -> estimator` under its function name."""
    _REGISTRY[builder.__name__] = builder
    return builder


@register
def logreg(seed: int, n_threads: int) -> ClassifierMixin:
    return LogisticRegression(max_iter=2000, random_state=seed)


@register
def svm_rbf(seed: int, n_threads: int) -> ClassifierMixin:
    """Platt-scaled on internal 5-fold predictions: what `SVC(probability=True)` did before
    scikit-learn 1.9 deprecated it. Its own parameters are `estimator__C`, `estimator__gamma`."""
    return CalibratedClassifierCV(SVC(kernel="rbf", random_state=seed), ensemble=False)


@register
def random_forest(seed: int, n_threads: int) -> ClassifierMixin:
    return RandomForestClassifier(n_estimators=300, n_jobs=n_threads, random_state=seed)


@register
def extra_trees(seed: int, n_threads: int) -> ClassifierMixin:
    return ExtraTreesClassifier(n_estimators=300, n_jobs=n_threads, random_state=seed)


@register
def knn(seed: int, n_threads: int) -> ClassifierMixin:
    return KNeighborsClassifier(n_neighbors=7, weights="distance")


@register
def hist_gb(seed: int, n_threads: int) -> ClassifierMixin:
    return HistGradientBoostingClassifier(random_state=seed)


@register
def xgboost(seed: int, n_threads: int) -> ClassifierMixin:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=200, learning_rate=0.1, max_depth=4, subsample=0.9,
                         colsample_bytree=0.9, tree_method="hist", n_jobs=n_threads, random_state=seed)


def list_classifiers() -> list[str]:
    """Registered classifier names, in table order."""
    return list(_REGISTRY)


def classifier_params(name: str, seed: int = 0, **params) -> dict[str, object]:
    """Every hyper-parameter of the pipeline `create_classifier` builds, as plain values keyed like
    `get_params` (`model__max_depth`): what a tracked run records so runs compare side by side."""
    plain = (bool, int, float, str, type(None))
    return {k: v for k, v in create_classifier(name, seed, 1, **params).get_params().items()
            if isinstance(v, plain) and k != "model__n_jobs"}


def create_classifier(name: str, seed: int = 0, n_threads: int | None = None, **params) -> Pipeline:
    """Pipeline impute -> scale -> model; `params` override the model's defaults (e.g. C=10).

    n_threads: threads for the models that take a count (forests, XGBoost); default: every CPU.
    A caller fitting several models at once in processes gives each its share (`features.crossval`).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown classifier {name!r}; choose from {', '.join(_REGISTRY)}")
    model = _REGISTRY[name](seed, n_threads or os.cpu_count() or 1)
    unknown = set(params) - set(model.get_params())
    if unknown:
        raise ValueError(f"{name} has no parameter(s) {', '.join(sorted(unknown))}; "
                         f"it takes {', '.join(sorted(model.get_params()))}")
    model.set_params(**params)
    return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler()), ("model", model)])
