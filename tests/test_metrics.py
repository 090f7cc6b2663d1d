"""Our metrics equal scikit-learn's on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from benscale.train import metrics


def _hand_made() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = (rng.random((40, 5)) < 0.35).astype(np.uint8)
    y[0] = 1  # every class has a positive
    logits = rng.normal(size=(40, 5)) + 1.5 * (y - 0.5)
    logits[:10, 2] = 0.25  # ties, which AP must count together
    return y, logits


def test_average_precision_equals_sklearn() -> None:
    y, logits = _hand_made()
    prob = 1 / (1 + np.exp(-logits))
    scores, ap = metrics.evaluate(y, logits)
    assert ap == pytest.approx([average_precision_score(y[:, c], prob[:, c]) for c in range(5)])
    assert scores["map_macro"] == pytest.approx(average_precision_score(y, prob, average="macro"))
    assert scores["map_micro"] == pytest.approx(average_precision_score(y, prob, average="micro"))


def test_threshold_metrics_equal_sklearn() -> None:
    y, logits = _hand_made()
    pred = (1 / (1 + np.exp(-logits)) >= 0.5).astype(int)
    scores, _ = metrics.evaluate(y, logits)
    assert scores["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert scores["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert scores["precision_micro"] == pytest.approx(precision_score(y, pred, average="micro"))
    assert scores["recall_micro"] == pytest.approx(recall_score(y, pred, average="micro"))


def test_small_exact_case() -> None:
    # scores 0.9 (pos), 0.8 (neg), 0.7 (pos): AP = 1/2*1 + 1/2*2/3
    assert metrics.average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])) == \
        pytest.approx(0.5 + 1 / 3)


def test_class_without_positives_is_nan_and_left_out_of_macro() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0]])
    logits = np.array([[2.0, 1.0], [-1.0, 0.0], [0.5, -2.0]])
    scores, ap = metrics.evaluate(y, logits)
    assert ap[0] == pytest.approx(1.0) and np.isnan(ap[1])
    assert scores["map_macro"] == pytest.approx(1.0)


def test_frequency_baseline_is_the_prevalence() -> None:
    train = np.array([[1, 0], [1, 1], [0, 0], [1, 0]])
    val = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    assert metrics.frequency_baseline_map_macro(train, val) == pytest.approx((0.5 + 0.5) / 2)
