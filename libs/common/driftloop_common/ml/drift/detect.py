"""Calibrated drift decisions: every statistic against its null for the same window size.

Fixed PSI thresholds do not work on embedding components: a real 20-point intent-mix
shift scores a mean component PSI of about 0.01, while a stable window of 400 rows scores
more than that by chance alone. So for each statistic

    psi_mean, psi_max        PSI per principal component, summarized
    label_psi, label_chi2    the label distribution of labelled traffic
    domain_auc               a classifier telling baseline rows from window rows

we estimate its distribution under "no drift" by drawing windows of the same size from the
baseline's holdout (independent of the reference the statistic compares against), and
fire when the observed value exceeds the null's (1 - α/s) quantile, where s is the number
of statistics evaluated (Bonferroni), so that the false-alarm rate of the whole check is
at most α (default 1 %). Nulls are cached per baseline and window-size bucket.

The domain classifier's null uses few rounds (each is a cross-validated fit), so its
threshold is the larger of the empirical quantile and a normal approximation
mean + z·sd of the null rounds.

Detectors are registered functions (Evidently's stattest registry), looked up by the
names in `DetectorConfig.detectors`; a new statistic is one new function:

    @detector("my_detector")
    def my_detector(inputs: DriftInputs) -> list[Statistic] | Skipped:
        ...  # its value on inputs.window; null draws from inputs.rng(size, stream), where
             # stream is its own number (1-3 are taken), kept in inputs.nulls

`DriftDetector.check` runs them in registration order, the configured ones and those
registered `always_reported` (cheap, their scores inform but never fire unless
configured), and reports their scores in that order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.contracts.events import DetectorScore
from driftloop_common.ml.drift.baseline import DriftBaseline
from driftloop_common.ml.drift.psi import DEFAULT_EPSILON, PsiSummary, level, psi_from_counts
from driftloop_common.ml.drift.window import WindowSnapshot

DEFAULT_DETECTORS = ("component_psi", "label", "domain_classifier")  # the built-ins below
OTHER_LABEL = "<other>"  # labels the baseline never saw, pooled for label PSI / chi-square


@dataclass(frozen=True)
class DetectorConfig:
    alpha: float = 0.01  # false alarms per check, for the whole check
    detectors: tuple[str, ...] = DEFAULT_DETECTORS  # which ones may decide (names in DETECTORS)
    min_rows: int = 200
    min_labelled: int = 200
    null_rounds: int = 2000  # cheap statistics (PSI, labels)
    domain_null_rounds: int = 20  # each round is a cross-validated fit
    domain_sample: int = 1000  # rows per side for the domain classifier
    cv_folds: int = 3
    psi_component_threshold: float = 0.1  # for the share-above summary only
    epsilon: float = DEFAULT_EPSILON
    seed: int = 0

    def __post_init__(self) -> None:
        require_known(self.detectors)
        if not 0 < self.alpha < 1:
            raise ConfigError("alpha must be between 0 and 1")


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class DriftInputs:
    """What a detector function sees: one window, the baseline it is compared against, and
    what its `DriftDetector` keeps between checks (null draws, the holdout pre-binned)."""

    baseline: DriftBaseline  # reference counts and labels, holdout rows and labels, projection
    window: WindowSnapshot  # the window's counts, row sample and labels
    config: DetectorConfig
    nulls: dict[tuple[str, int], NDArray[np.float64]]  # (statistic, size) → null draws
    holdout_bins: NDArray[np.intp]  # the holdout's bin index per (row, component)

    def rng(self, size: int, stream: int) -> np.random.Generator:
        """The generator for one detector's (`stream`) draws at one window size."""
        return np.random.default_rng([self.config.seed, size, stream])

    @cached_property
    def psi(self) -> PsiSummary:
        """PSI per component of the window against the reference, summarized."""
        cfg = self.config
        values = psi_from_counts(self.baseline.reference_counts, self.window.counts, cfg.epsilon)
        return PsiSummary.of(values, cfg.psi_component_threshold)


@dataclass(frozen=True)
class Statistic:
    """One value a detector measured on the window, and its null draws at this size."""

    name: str
    value: float
    null: NDArray[np.float64]
    normal_bound: bool = False  # few null rounds: also bound by mean + z·sd of the null


@dataclass(frozen=True)
class Skipped:
    reason: str  # why the detector did not run on this window


DetectorFn = Callable[[DriftInputs], Sequence[Statistic] | Skipped]


@dataclass(frozen=True)
class Detector:
    name: str
    run: DetectorFn
    always_reported: bool  # run even when not configured: its scores inform, never fire


DETECTORS: dict[str, Detector] = {}
"""Every known detector by name, in registration order (the order of a report's scores)."""


def detector(name: str, *, always_reported: bool = False) -> Callable[[DetectorFn], DetectorFn]:
    """Register a detector function under `name` (the name configuration uses)."""

    def register(run: DetectorFn) -> DetectorFn:
        if name in DETECTORS:
            raise ValueError(f"detector {name!r} is already registered")
        DETECTORS[name] = Detector(name, run, always_reported)
        return run

    return register


def require_known(names: Sequence[str]) -> None:
    unknown = set(names) - set(DETECTORS)
    if unknown:
        raise ConfigError(f"unknown detectors {sorted(unknown)}; known: {list(DETECTORS)}")


# ---------------------------------------------------------------- statistics
def size_bucket(rows: int) -> int:
    """Window sizes within ~5 % share one cached null (sizes on a geometric grid)."""
    return max(1, round(1.05 ** round(math.log(max(rows, 1), 1.05))))


def draw_stable_window(rng: np.random.Generator, pool: int, size: int) -> NDArray[np.intp]:
    """Indices of a stable window drawn from the holdout (H rows).

    Up to H/3 rows: without replacement. Its smaller variance, (H - n)/(H - 1) of an
    independent sample's, is offset on average by the holdout's own deviation from
    the reference. Nearer H the null collapses onto that one deviation (a false-alarm
    rate of 36 % at n = 0.97 H, measured), so larger windows are bootstrapped: every
    row independent, the null slightly wide, fewer false alarms rather than more."""
    if size <= pool // 3:
        return rng.choice(pool, size=size, replace=False)
    return rng.integers(0, pool, size=size)


def label_statistics(
    reference: Counter[str] | dict[str, int], window: Counter[str], epsilon: float
) -> tuple[float, float]:
    """(label PSI, chi-square statistic) of window label counts against the reference shares."""
    known = sorted(reference)
    ref = np.array([*(reference[c] for c in known), 0], dtype=np.float64)
    unseen = sum(v for k, v in window.items() if k not in reference)  # pooled as OTHER_LABEL
    win = np.array([*(window.get(c, 0) for c in known), unseen], dtype=np.float64)
    label_psi = float(psi_from_counts(ref[None, :], win[None, :], epsilon)[0])
    expected = np.maximum(ref / ref.sum(), epsilon)
    expected = expected / expected.sum() * win.sum()
    chi2 = float(stats.chisquare(win, expected).statistic)
    return label_psi, chi2


def domain_auc(
    baseline_rows: NDArray[np.floating], window_rows: NDArray[np.floating], folds: int, seed: int
) -> float:
    """Cross-validated ROC AUC of a logistic regression telling the two samples apart."""
    x = np.concatenate([baseline_rows, window_rows])
    y = np.r_[np.zeros(len(baseline_rows)), np.ones(len(window_rows))]
    model = LogisticRegression(C=1.0, max_iter=500)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=cv, method="decision_function")
    return float(roc_auc_score(y, scores))


def _too_few_rows(inputs: DriftInputs) -> Skipped | None:
    rows, min_rows = inputs.window.rows, inputs.config.min_rows
    return Skipped(f"{rows} rows < min_rows {min_rows}") if rows < min_rows else None


# ---------------------------------------------------------------- the built-in detectors
@detector("component_psi", always_reported=True)
def component_psi(inputs: DriftInputs) -> list[Statistic] | Skipped:
    if skip := _too_few_rows(inputs):
        return skip
    bucket = size_bucket(inputs.window.rows)
    key_mean, key_max = ("psi_mean", bucket), ("psi_max", bucket)
    nulls = inputs.nulls
    if key_mean not in nulls:
        rng = inputs.rng(bucket, 1)
        reference = inputs.baseline.reference_counts
        k, bins = reference.shape
        offsets = np.arange(k) * bins
        holdout_bins = inputs.holdout_bins
        means, maxes = [], []
        for _ in range(inputs.config.null_rounds):
            idx = draw_stable_window(rng, holdout_bins.shape[0], bucket)
            flat = (holdout_bins[idx] + offsets).ravel()
            counts = np.bincount(flat, minlength=k * bins).reshape(k, bins)
            values = psi_from_counts(reference, counts, inputs.config.epsilon)
            means.append(values.mean())
            maxes.append(values.max())
        nulls[key_mean] = np.array(means)
        nulls[key_max] = np.array(maxes)
    return [
        Statistic("psi_mean", inputs.psi.mean, nulls[key_mean]),
        Statistic("psi_max", inputs.psi.max, nulls[key_max]),
    ]


@detector("domain_classifier")
def domain_classifier(inputs: DriftInputs) -> list[Statistic] | Skipped:
    if skip := _too_few_rows(inputs):
        return skip
    cfg, sample = inputs.config, inputs.window.sample
    holdout = inputs.baseline.holdout
    size = min(cfg.domain_sample, sample.shape[0], holdout.shape[0] // 2)
    rng = inputs.rng(size, 3)  # draws the compared rows, then (once per size) the null's
    ours = sample[rng.choice(sample.shape[0], size=size, replace=False)]
    theirs = holdout[rng.choice(holdout.shape[0], size=size, replace=False)]
    auc = domain_auc(theirs, ours, cfg.cv_folds, cfg.seed)
    key = ("domain_auc", size)
    if key not in inputs.nulls:
        null = []
        for round_ in range(cfg.domain_null_rounds):
            order = rng.permutation(holdout.shape[0])
            a, b = holdout[order[:size]], holdout[order[size : 2 * size]]
            null.append(domain_auc(a, b, cfg.cv_folds, cfg.seed + round_))
        inputs.nulls[key] = np.array(null)
    return [Statistic("domain_auc", auc, inputs.nulls[key], normal_bound=True)]


@detector("label", always_reported=True)
def label_drift(inputs: DriftInputs) -> list[Statistic] | Skipped:
    cfg, baseline, window = inputs.config, inputs.baseline, inputs.window
    if not baseline.holdout_labels:
        return Skipped("the baseline has no labels")
    if window.labelled < cfg.min_labelled:
        return Skipped(f"{window.labelled} labelled rows < min_labelled {cfg.min_labelled}")
    label_psi, chi2 = label_statistics(baseline.reference_labels, window.labels, cfg.epsilon)
    bucket = size_bucket(window.labelled)
    key_psi, key_chi2 = ("label_psi", bucket), ("label_chi2", bucket)
    nulls = inputs.nulls
    if key_psi not in nulls:
        rng = inputs.rng(bucket, 2)
        labels = np.array(baseline.holdout_labels)
        psis, chis = [], []
        for _ in range(cfg.null_rounds):
            drawn = Counter(labels[draw_stable_window(rng, labels.size, bucket)].tolist())
            drawn_psi, drawn_chi2 = label_statistics(baseline.reference_labels, drawn, cfg.epsilon)
            psis.append(drawn_psi)
            chis.append(drawn_chi2)
        nulls[key_psi] = np.array(psis)
        nulls[key_chi2] = np.array(chis)
    return [
        Statistic("label_psi", label_psi, nulls[key_psi]),
        Statistic("label_chi2", chi2, nulls[key_chi2]),
    ]


# ---------------------------------------------------------------- the detector
@dataclass(frozen=True)
class DriftReport:
    drifted: bool
    window_rows: int
    labelled_rows: int
    scores: list[DetectorScore]
    psi: PsiSummary | None
    psi_level: str
    skipped: dict[str, str] = field(default_factory=dict)  # detector → why it did not run

    def score(self, statistic: str) -> DetectorScore | None:
        return next((s for s in self.scores if s.statistic == statistic), None)


def threshold(statistic: Statistic, alpha: float) -> float:
    """The null's (1 - alpha) quantile (for a `normal_bound` statistic, at least the normal's)."""
    null = statistic.null
    empirical = float(np.quantile(null, 1.0 - alpha))
    if statistic.normal_bound:
        normal = float(null.mean() + stats.norm.ppf(1.0 - alpha) * null.std(ddof=1))
        return max(empirical, normal)
    return empirical


class DriftDetector:
    """Scores window snapshots against one baseline; caches null distributions."""

    def __init__(self, baseline: DriftBaseline, config: DetectorConfig | None = None) -> None:
        self.baseline = baseline
        self.config = config or DetectorConfig()
        require_known(self.config.detectors)  # again: one may be unregistered since
        self._detectors = [
            d for d in DETECTORS.values() if d.name in self.config.detectors or d.always_reported
        ]
        self._nulls: dict[tuple[str, int], NDArray[np.float64]] = {}
        # The holdout's bin index per (row, component), computed once: a null draw is then
        # a bincount of sampled rows instead of a fresh comparison against every edge.
        edges = baseline.edges
        holdout = baseline.holdout.astype(np.float64)
        self._holdout_bins = (holdout[:, None, :] > edges[None, :, :]).sum(axis=1)

    def check(self, window: WindowSnapshot) -> DriftReport:
        cfg = self.config
        inputs = DriftInputs(self.baseline, window, cfg, self._nulls, self._holdout_bins)
        measured: list[tuple[str, Statistic]] = []
        skipped: dict[str, str] = {}
        for det in self._detectors:
            result = det.run(inputs)
            if isinstance(result, Skipped):
                skipped[det.name] = result.reason
            else:
                measured.extend((det.name, statistic) for statistic in result)

        deciding = [name for name, _ in measured if name in cfg.detectors]
        per_statistic_alpha = cfg.alpha / max(len(deciding), 1)
        scores = []
        for name, statistic in measured:
            quantile = threshold(statistic, per_statistic_alpha)
            scores.append(
                DetectorScore(
                    detector=name,
                    statistic=statistic.name,
                    value=statistic.value,
                    null_quantile=quantile,
                    fired=name in cfg.detectors and statistic.value > quantile,
                )
            )
        summary = inputs.psi if window.rows >= cfg.min_rows else None
        return DriftReport(
            drifted=any(s.fired for s in scores),
            window_rows=window.rows,
            labelled_rows=window.labelled,
            scores=scores,
            psi=summary,
            psi_level=level(summary.max) if summary else "stable",
            skipped=skipped,
        )
