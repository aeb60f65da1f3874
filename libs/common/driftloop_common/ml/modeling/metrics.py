"""Model quality numbers, computed the same way by the trainer and the evaluator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score


@dataclass(frozen=True)
class ClassificationScores:
    """Macro-F1, accuracy and F1 per class over one set of labelled rows."""

    macro_f1: float
    accuracy: float
    per_class_f1: dict[str, float]
    support: dict[str, int]
    rows: int

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Flat MLflow metrics: `{prefix}_macro_f1`, `{prefix}_accuracy`, `{prefix}_rows`."""
        return {
            f"{prefix}_macro_f1": self.macro_f1,
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_rows": float(self.rows),
        }


def classification_scores(
    y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray
) -> ClassificationScores:
    """Scores over the classes present in `y_true` (a class the model predicts but that
    never occurs counts against precision of the others, not as a zero-F1 class)."""
    truth, predicted = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if len(truth) == 0:
        raise ValueError("no rows to score")
    classes, counts = np.unique(truth.astype(str), return_counts=True)
    f1 = f1_score(truth, predicted, labels=classes, average=None, zero_division=0)
    return ClassificationScores(
        macro_f1=float(np.mean(f1)),
        accuracy=float(accuracy_score(truth, predicted)),
        per_class_f1={str(c): float(v) for c, v in zip(classes, f1, strict=True)},
        support={str(c): int(n) for c, n in zip(classes, counts, strict=True)},
        rows=len(truth),
    )


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (R² is 0 for a constant target instead of undefined)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if len(y_true) == 0:
        raise ValueError("no rows to score")
    constant = np.allclose(y_true, y_true[0])
    return {
        "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": 0.0 if constant else float(r2_score(y_true, y_pred)),
    }


def distribution_shift(a: Sequence[str], b: Sequence[str]) -> float:
    """Total variation distance between two label distributions (0 same, 1 disjoint)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    labels = sorted(set(a) | set(b))
    index = {label: i for i, label in enumerate(labels)}
    pa = np.bincount([index[x] for x in a], minlength=len(labels)) / len(a)
    pb = np.bincount([index[x] for x in b], minlength=len(labels)) / len(b)
    return float(0.5 * np.abs(pa - pb).sum())


def expected_calibration_error(
    confidences: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    bins: int = 15,
) -> float:
    """How far the top-class confidence is from the accuracy it claims (0: calibrated).

    The rows fall into `bins` equal-width bins of confidence, (0, 1/bins], …, ((bins−1)/bins,
    1] (0 goes into the first); ECE is the row-weighted mean of |accuracy − mean confidence|
    over the bins (Guo et al. 2017, 15 bins). The label-free accuracy estimate (the mean
    confidence of a window) is only as good as this is small."""
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if len(conf) != len(hits):
        raise ValueError(f"{len(conf)} confidences for {len(hits)} answers")
    if len(conf) == 0:
        raise ValueError("no rows to score")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    # Σ_b (n_b / n)·|acc_b − conf_b| = Σ_b |Σ_{i in b} (hit_i − conf_i)| / n
    gap = np.bincount(index, weights=hits - conf, minlength=bins)
    return float(np.abs(gap).sum() / len(conf))
