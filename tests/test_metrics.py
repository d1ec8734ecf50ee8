"""The one metric function: names, values against scikit-learn, and edge cases users hit."""

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score,
                             cohen_kappa_score, f1_score, matthews_corrcoef, precision_score,
                             recall_score, roc_auc_score, top_k_accuracy_score)

from mcn.metrics import classification_metrics, confusion, metric_names

CLASSES = ("RES", "PES", "AA", "RA")


@pytest.fixture
def example():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 60)
    logits = rng.normal(size=(60, 4))
    logits[np.arange(60), y] += 1.0  # better than chance, not perfect
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def test_metrics_match_scikit_learn(example):
    y, p = example
    pred = p.argmax(axis=1)
    m = classification_metrics(y, p, CLASSES)
    assert list(m) == metric_names(CLASSES)
    assert m["top1"] == pytest.approx(accuracy_score(y, pred))
    assert m["top2"] == pytest.approx(top_k_accuracy_score(y, p, k=2, labels=range(4)))
    assert m["precision_macro"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["recall_macro"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    for k, c in enumerate(CLASSES):
        assert m[f"ap_{c}"] == pytest.approx(average_precision_score(y == k, p[:, k]))
        assert m[f"auc_{c}"] == pytest.approx(roc_auc_score(y == k, p[:, k]))
    assert 0.25 < m["top1"] < m["top2"] <= 1.0


def test_hand_computed_example():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    m = classification_metrics(y, p, ("a", "b"))
    assert m["top1"] == 0.75
    assert m["top2"] == 1.0
    assert m["recall_macro"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["auc_b"] == 1.0
    np.testing.assert_array_equal(confusion(y, p, 2), [[1, 1], [0, 2]])


def test_class_absent_from_test_part_gives_nan_not_crash(example):
    y, p = example
    keep = y != 3
    m = classification_metrics(y[keep], p[keep], CLASSES)
    assert np.isnan(m["ap_RA"]) and np.isnan(m["auc_RA"])
    assert np.isfinite(m["f1_macro"])


def test_macro_averages_count_only_classes_present_in_the_test_part():
    y = np.array([0, 0, 1, 1, 2])
    p = np.eye(4)[[0, 0, 1, 2, 2]] * 0.7 + 0.075  # one class-1 crystal called class 2; class 3 absent
    m = classification_metrics(y, p, CLASSES)
    f1 = f1_score(y, p.argmax(1), labels=[0, 1, 2], average=None)
    assert m["f1_macro"] == pytest.approx(f1.mean())  # not f1.sum() / 4 with an invented F1 = 0 for RA
    assert m["recall_macro"] == pytest.approx(m["balanced_accuracy"])
    assert m["top2"] == pytest.approx(top_k_accuracy_score(y, p, k=2, labels=range(4)))


def test_shape_mismatch_is_a_clear_error(example):
    y, p = example
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(y, p[:, :3], CLASSES)
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(y[:0], p[:0], CLASSES)
