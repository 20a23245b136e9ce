"""The BirdCLEF 2024/2025 metric: macro ROC-AUC over the classes that have a positive."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def scored_columns(y_true: np.ndarray) -> np.ndarray:
    """Boolean mask [C] of the classes the metric scores.

    The competition drops classes without a positive; a class without a negative has no defined
    AUC either (sklearn raises), so it is skipped the same way.
    """
    positives = (y_true > 0).sum(axis=0)
    return (positives > 0) & (positives < y_true.shape[0])


def macro_roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro ROC-AUC of y_score [N, C] against binary y_true [N, C]; NaN if no class can be scored."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must be equal 2-D shapes [N, C]")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or inf")
    keep = scored_columns(y_true)
    if not keep.any():
        return float("nan")
    return float(roc_auc_score(y_true[:, keep] > 0, y_score[:, keep], average="macro"))


def per_class_auc(y_true: np.ndarray, y_score: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """ROC-AUC of each class (NaN for the classes the metric skips)."""
    y_true = np.asarray(y_true)
    keep = scored_columns(y_true)
    return {
        name: float(roc_auc_score(y_true[:, c] > 0, y_score[:, c])) if keep[c] else float("nan")
        for c, name in enumerate(class_names)
    }
