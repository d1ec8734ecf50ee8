"""The one metric function every model in the suite is judged by (paper sections 4.1 and 5).

CNNs, classical models, studies and the benchmark table all call `classification_metrics`, so the
same names mean the same numbers everywhere: in MLflow, in tables and in Optuna objectives.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (average_precision_score, balanced_accuracy_score, cohen_kappa_score,
                             confusion_matrix, matthews_corrcoef, precision_recall_fscore_support,
                             roc_auc_score, top_k_accuracy_score)

SUMMARY_METRICS = ("top1", "top2", "precision_macro", "recall_macro", "f1_macro",
                   "balanced_accuracy", "kappa", "mcc")
"""The class-independent metric names, in the order tables show them."""

METRICS_VERSION = 2
"""Bumped when a metric's definition changes, so stored results of the old definition are not mixed
in (benchmark config.json). 2: macro averages over the classes present in the test part; top-k by
scikit-learn."""


def metric_names(class_names: tuple[str, ...] | list[str]) -> list[str]:
    """Every key `classification_metrics` returns for these classes, in table order."""
    return [*SUMMARY_METRICS, *(f"ap_{c}" for c in class_names), *(f"auc_{c}" for c in class_names)]


def _check(y_true: np.ndarray, probabilities: np.ndarray, class_names) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape != (len(y_true), len(class_names)):
        raise ValueError(
            f"probabilities must have shape (n_crystals, n_classes) = ({len(y_true)}, {len(class_names)}); "
            f"got {probabilities.shape}"
        )
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set of crystals")
    if y_true.min() < 0 or y_true.max() >= len(class_names):
        raise ValueError(f"labels must lie in 0..{len(class_names) - 1}; got {y_true.min()}..{y_true.max()}")
    return y_true, probabilities


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray,
                           class_names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Flat dict of the suite's metric names (see `metric_names`) for class probabilities.

    Macro precision, recall and F1 average over the classes present in `y_true`: a class absent from
    a test fold has no defined recall, and counting it as 0 would punish every model for the split
    (balanced accuracy already ignores it). Per-class AP and ROC-AUC are one-vs-rest; a class absent
    from `y_true` gets NaN there, since neither is defined without positives.
    """
    y_true, probabilities = _check(y_true, probabilities, class_names)
    y_pred = probabilities.argmax(axis=1)
    labels = np.arange(len(class_names))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on a single class; the value is still defined
        out = {
            "top1": float(np.mean(y_pred == y_true)),
            # with two classes every class is in the top 2 (scikit-learn refuses 2-D binary scores)
            "top2": 1.0 if len(labels) <= 2 else float(top_k_accuracy_score(y_true, probabilities, k=2,
                                                                              labels=labels)),
            "precision_macro": float(precision),
            "recall_macro": float(recall),
            "f1_macro": float(f1),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
            "mcc": float(matthews_corrcoef(y_true, y_pred)),
        }
    out["kappa"] = 0.0 if np.isnan(out["kappa"]) else out["kappa"]
    for k, name in enumerate(class_names):
        positives = y_true == k
        defined = positives.any() and not positives.all()
        out[f"ap_{name}"] = float(average_precision_score(positives, probabilities[:, k])) if defined else np.nan
        out[f"auc_{name}"] = float(roc_auc_score(positives, probabilities[:, k])) if defined else np.nan
    return {name: out[name] for name in metric_names(class_names)}


def confusion(y_true: np.ndarray, probabilities: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted) of the argmax predictions."""
    y_pred = np.asarray(probabilities).argmax(axis=1)
    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
