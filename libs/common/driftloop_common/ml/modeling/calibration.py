"""Calibrated probabilities for text classifiers: temperature scaling and the abstain floor.

The rollback-watcher estimates a live model's accuracy without labels as the mean top-class
probability of a window, and the predictor abstains below a confidence: both need the
probabilities to mean what they say. Both numbers are fitted on the validation rows only.

- Temperature scaling (Guo et al. 2017): `softmax(log(p) / T)`, with the one T that
  minimises the validation negative log-likelihood. One parameter: it never changes which
  class ranks first, so accuracy and F1 stay as they are.
- The abstain floor: the confidence below which the validation answers are wrong more
  often than right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from driftloop_common.ml.modeling.metrics import expected_calibration_error

TEMPERATURE_BOUNDS = (0.05, 20.0)
_TINY = 1e-300  # log(0) guard: a class the head gives exactly 0 stays (numerically) at 0


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), _TINY, None))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """`softmax(log(proba) / T)` per row; `proba` itself when T is 1 (bit for bit, so a
    version without a fitted temperature predicts exactly as before)."""
    if temperature == 1.0 or len(proba) == 0:
        return proba
    return softmax(_log(proba) / temperature, axis=1)


def fit_temperature(
    proba: np.ndarray,
    truth: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The T in `bounds` minimising the mean negative log-likelihood of
    `softmax(log(proba) / T)` at the true classes (`truth`: column indices of `proba`).

    T > 1 softens an over-confident model, T < 1 sharpens an under-confident one."""
    if len(truth) == 0:
        raise ValueError("no rows to fit a temperature on")
    logp = _log(proba)
    rows, truth = np.arange(len(truth)), np.asarray(truth, dtype=np.intp)

    def nll(t: float) -> float:
        return float(-log_softmax(logp / t, axis=1)[rows, truth].mean())

    found = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-4})
    return float(found.x)


def abstain_floor(confidences: np.ndarray, correct: np.ndarray) -> float:
    """The threshold t, among the validation confidences, that maximises
    (#wrong answers with confidence < t) − (#right answers with confidence < t): abstaining
    below it turns away more wrong answers than right ones. 0.0 when no threshold gains
    (ties: the lowest such t, which abstains least)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} answers")
    if len(confidences) == 0:
        return 0.0
    thresholds, level = np.unique(confidences, return_inverse=True)
    # net[k]: (wrong − right) among the rows whose confidence equals thresholds[k]
    net = np.bincount(level, weights=np.where(correct, -1.0, 1.0), minlength=len(thresholds))
    # gain[k]: (wrong − right) strictly below thresholds[k]
    gain = np.concatenate([[0.0], np.cumsum(net)[:-1]])
    best = int(np.argmax(gain))
    return float(thresholds[best]) if gain[best] > 0 else 0.0


@dataclass(frozen=True)
class Calibration:
    """What calibration chose on the validation rows, and the ECE before and after."""

    temperature: float  # 1.0: not applied
    abstain_floor: float
    validation_ece_raw: float
    validation_ece: float

    def as_metrics(self) -> dict[str, float]:
        return {
            "validation_ece_raw": self.validation_ece_raw,
            "validation_ece": self.validation_ece,
            "calibration_temperature": self.temperature,
            "abstain_floor": self.abstain_floor,
        }


def calibrate(
    proba: np.ndarray, truth: np.ndarray, *, above_ece: float, scale: bool = True
) -> Calibration:
    """Temperature-scale validation probabilities `proba` (`truth`: their true columns) when
    their ECE is above `above_ece` (0: always; `scale=False`: never, for a model that
    cannot apply a temperature), then choose the abstain floor on what the model will
    answer: the calibrated probabilities."""
    truth = np.asarray(truth, dtype=np.intp)
    correct = proba.argmax(axis=1) == truth
    raw = expected_calibration_error(proba.max(axis=1), correct)
    temperature = 1.0
    if scale and (above_ece == 0 or raw > above_ece):
        temperature = fit_temperature(proba, truth)
    calibrated = apply_temperature(proba, temperature)
    confidence = calibrated.max(axis=1)
    return Calibration(
        temperature=temperature,
        abstain_floor=abstain_floor(confidence, correct),
        validation_ece_raw=raw,
        validation_ece=expected_calibration_error(confidence, correct),
    )
