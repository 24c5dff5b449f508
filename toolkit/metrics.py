"""Precision, recall and F1 from counts: one definition for every package and the app."""

from __future__ import annotations

import numpy as np


def precision_recall_f1(
    correct: float, predicted: float, gold: float
) -> tuple[float, float, float]:
    """(precision, recall, F1) with 0 where a denominator is 0.

    precision = correct / predicted, recall = correct / gold, F1 their harmonic mean.
    """
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def precision_recall_f1_curve(
    correct: np.ndarray, predicted: np.ndarray, gold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Element-wise `precision_recall_f1` over arrays of counts (e.g. along a ranked list)."""
    correct = np.asarray(correct, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    p = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    r = correct / gold if gold else np.zeros_like(correct)
    s = p + r
    f1 = np.divide(2 * p * r, s, out=np.zeros_like(s), where=s > 0)
    return p, r, f1
