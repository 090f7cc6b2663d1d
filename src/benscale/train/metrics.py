"""Multi-label metrics of BigEarthNet papers: mAP (micro/macro), F1, precision, recall.

Plain numpy, computed once on the gathered predictions of the FULL split. Definitions
follow scikit-learn's (tests/test_metrics.py checks equality):

* average precision of one class = sum over distinct score thresholds (descending) of
  (recall_n - recall_{n-1}) x precision_n, ties counted together; ``micro`` pools every
  (patch, class) pair, ``macro`` averages the classes that have at least one positive
  (a class absent from the split has no defined AP; it is NaN in per-class output);
* F1/precision/recall at probability 0.5 (logit 0), zero where undefined (0/0).
"""

from __future__ import annotations

import numpy as np

#: Decision threshold on sigmoid probabilities for F1, precision and recall.
THRESHOLD = 0.5


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """AP of a binary problem; NaN when ``y_true`` has no positive."""
    y_true = np.asarray(y_true).ravel().astype(bool)
    score = np.asarray(score, dtype=np.float64).ravel()
    if not y_true.any():
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    y, s = y_true[order], score[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_class_ap(y_true: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AP of each class (column); NaN for classes without positives."""
    return np.array([average_precision(y_true[:, c], score[:, c])
                     for c in range(y_true.shape[1])])


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def threshold_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """F1 micro/macro and micro precision/recall of predictions ``prob >= 0.5``."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(prob) >= THRESHOLD
    tp = (y & pred).sum(axis=0)
    fp = (~y & pred).sum(axis=0)
    fn = (y & ~pred).sum(axis=0)
    f1_class = _safe_div(2 * tp, 2 * tp + fp + fn)
    return {
        "f1_micro": float(_safe_div(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())),
        "f1_macro": float(f1_class.mean()),
        "precision_micro": float(_safe_div(tp.sum(), tp.sum() + fp.sum())),
        "recall_micro": float(_safe_div(tp.sum(), tp.sum() + fn.sum())),
    }


def evaluate(y_true: np.ndarray, logits: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """All metrics of a split from targets and raw logits.

    Returns:
        (``{"map_micro", "map_macro", "f1_micro", "f1_macro", "precision_micro",
        "recall_micro"}``, per-class AP array).
    """
    prob = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    ap = per_class_ap(y_true, prob)
    scores = {
        "map_micro": average_precision(y_true, prob),
        "map_macro": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
    }
    scores.update(threshold_metrics(y_true, prob))
    return scores, ap


def frequency_baseline_map_macro(train_labels: np.ndarray, eval_labels: np.ndarray) -> float:
    """Macro mAP of the label-frequency baseline (every patch scored with train priors).

    A constant score per class ranks every patch alike, so each class's AP is its
    prevalence in the evaluated split: the floor a trained model must clear.
    """
    prior = np.asarray(train_labels, dtype=np.float64).mean(axis=0)
    scores = np.broadcast_to(prior, np.asarray(eval_labels).shape)
    return float(np.nanmean(per_class_ap(np.asarray(eval_labels), scores)))
