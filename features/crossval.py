"""Classical models on the suite's folds, scored by the suite's one metric function.

A classical model sees the same test crystals as every CNN of a run (the same `Fold`s) and is
scored by `mcn.metrics.classification_metrics`, so its row in a table is comparable by
construction. It trains on the fold's training and validation parts together: it has no early
stopping to spend the validation part on.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Callable, Sequence

import numpy as np
from joblib import Parallel, delayed
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from features.zoo import create_classifier
from mcn.data.splits import Fold
from mcn.metrics import classification_metrics



def thread_share(n_jobs: int) -> int:
    """Threads each of `n_jobs` concurrent fits may use: the CPUs shared out, at least one.

    OpenMP threads (XGBoost, HistGradientBoosting) spin-wait: more threads than free cores made a
    60-crystal hist_gb fit take 14 s instead of 0.5 s on a busy two-core machine, so concurrent fits
    never ask for more than their share.
    """
    return max(1, (os.cpu_count() or 1) // max(1, n_jobs))

FoldFeatures = np.ndarray | Callable[[Fold], np.ndarray | tuple[np.ndarray, np.ndarray]]


def training_index(fold: Fold) -> np.ndarray:
    """Rows a classical model trains on in `fold`: its training then its validation part."""
    return np.concatenate([fold.train, fold.val])


def fit_classifier(name: str, X_train: np.ndarray, y_train: np.ndarray, seed: int = 0,
                   n_threads: int | None = None, **params) -> tuple[Pipeline, np.ndarray]:
    """Fit `name` on the classes present; returns the pipeline and those classes (sorted).

    n_threads: threads for the fit (default: every CPU, `thread_share(1)`).

    Labels are re-encoded to 0..k-1 because some models (XGBoost) refuse gaps in the labels.
    """
    X_train, y_train = _check_matrix(X_train, "X_train"), np.asarray(y_train)
    if y_train.ndim != 1 or len(y_train) != len(X_train):
        raise ValueError(f"y_train must be 1-D with one label per row of X_train ({len(X_train)}); "
                         f"got shape {y_train.shape}")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError(f"{name}: the training part holds {len(classes)} class(es) "
                         f"({', '.join(map(str, classes)) or 'none'}); a classifier needs at least 2")
    n_threads = n_threads or thread_share(1)
    with threadpool_limits(n_threads, user_api="openmp"):
        pipeline = create_classifier(name, seed, n_threads, **params).fit(X_train, np.searchsorted(classes, y_train))
    return pipeline, classes


def fit_predict_proba(name: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                      n_classes: int, seed: int = 0, n_threads: int | None = None,
                      **params) -> tuple[np.ndarray, float, float]:
    """Fit on the training part, predict the test part: (probabilities, fit_seconds, predict_seconds).

    Probabilities have one column per class 0..n_classes-1; a class missing from the training part
    gets probability 0 (with a warning): the model cannot predict what it never saw.
    """
    X_train, X_test = _check_matrix(X_train, "X_train"), _check_matrix(X_test, "X_test")
    labels = np.asarray(y_train)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"y_train must hold class indices 0..{n_classes - 1}; got {labels.min()}..{labels.max()}")
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_test has {X_test.shape[1]} features, X_train {X_train.shape[1]}")
    started = time.perf_counter()
    n_threads = n_threads or thread_share(1)
    pipeline, classes = fit_classifier(name, X_train, labels, seed, n_threads, **params)
    fit_seconds = time.perf_counter() - started
    missing = sorted(set(range(n_classes)) - set(classes.tolist()))
    if missing:
        warnings.warn(f"{name}: class(es) {missing} absent from the training part; they get probability 0",
                      stacklevel=2)
    started = time.perf_counter()
    with threadpool_limits(n_threads, user_api="openmp"):
        present = pipeline.predict_proba(X_test)
    predict_seconds = time.perf_counter() - started
    probabilities = np.zeros((len(X_test), n_classes))
    probabilities[:, classes] = present
    return probabilities, fit_seconds, predict_seconds


def cross_validate_classifier(name: str, X_for_fold: FoldFeatures, y: np.ndarray, folds: Sequence[Fold],
                              class_names: Sequence[str], seed: int = 0, n_jobs: int = 1,
                              **params) -> list[dict]:
    """One result dict per fold: fold, model, metrics, probabilities, test_index, y_true, timings.

    X_for_fold: the feature matrix of all crystals, or `fold -> matrix of all crystals` (e.g. fold
        k's CNN embeddings), or `fold -> (X_train, X_test)` with rows in `training_index(fold)` and
        `fold.test` order.
    n_jobs: folds fitted at once in worker processes, each with its `thread_share` of the CPUs;
        the results match a sequential run.
    """
    y = np.asarray(y)
    tasks = [(fold, *_fold_matrices(X_for_fold, fold, len(y))) for fold in folds]
    n_jobs = max(1, min(n_jobs, len(tasks)))
    score = delayed(_score_fold)
    return Parallel(n_jobs=n_jobs)(score(name, fold, X_train, X_test, y, class_names, seed, thread_share(n_jobs), params)
                                   for fold, X_train, X_test in tasks)


def _score_fold(name: str, fold: Fold, X_train: np.ndarray, X_test: np.ndarray, y: np.ndarray,
                class_names: Sequence[str], seed: int, n_threads: int, params: dict) -> dict:
    train = training_index(fold)
    probabilities, fit_seconds, predict_seconds = fit_predict_proba(
        name, X_train, y[train], X_test, len(class_names), seed, n_threads, **params)
    return {
        "fold": fold.index, "model": name, "n_train": len(train), "n_features": X_train.shape[1],
        "metrics": classification_metrics(y[fold.test], probabilities, class_names),
        "probabilities": probabilities, "test_index": fold.test, "y_true": y[fold.test],
        "fit_seconds": fit_seconds, "predict_seconds": predict_seconds,
    }


def _fold_matrices(X_for_fold: FoldFeatures, fold: Fold, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = X_for_fold(fold) if callable(X_for_fold) else X_for_fold
    if isinstance(X, tuple):
        return X
    X = np.asarray(X)
    if len(X) != n:
        raise ValueError(f"fold {fold.index}: feature matrix has {len(X)} rows for {n} crystals")
    return X[training_index(fold)], X[fold.test]


def _check_matrix(X: np.ndarray, what: str) -> np.ndarray:
    """A 2-D float matrix; NaN is allowed (imputed in the pipeline), infinity is not."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (crystals, features) matrix; got shape {X.shape}")
    if len(X) == 0:
        raise ValueError(f"{what} has no rows")
    bad = np.isinf(X).any(axis=0)
    if bad.any():
        raise ValueError(f"{what} has infinite values in feature column(s) {np.flatnonzero(bad)[:10].tolist()}; "
                         "replace them with NaN (imputed) or finite values")
    return X
