"""Calibrated decisions: stable windows rarely fire; real shifts do; config is honoured."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.ml.drift.baseline import DriftBaseline, build_baseline
from driftloop_common.ml.drift.detect import (
    DETECTORS,
    DetectorConfig,
    DriftDetector,
    DriftInputs,
    Skipped,
    Statistic,
    detector,
    label_statistics,
    size_bucket,
)
from driftloop_common.ml.drift.window import SlidingWindow
from tests.unit.drift_data import ENCODER, Traffic, shifted_weights, times

TRAFFIC = Traffic(seed=7)


@pytest.fixture(scope="module")
def baseline() -> DriftBaseline:
    x, labels = TRAFFIC.sample(8000, np.random.default_rng(0))
    return build_baseline(x, encoder=ENCODER, labels=labels, source="test")


def window_of(baseline, n, rng, weights=None):
    x, labels = TRAFFIC.sample(n, rng, weights)
    window = SlidingWindow(baseline)
    window.add(x, times(n), labels)
    return window.snapshot()


def test_stable_windows_keep_the_false_alarm_rate(baseline) -> None:
    detector = DriftDetector(
        baseline, DetectorConfig(alpha=0.01, detectors=("component_psi", "label"))
    )
    rng = np.random.default_rng(11)
    reports = [detector.check(window_of(baseline, 1000, rng)) for _ in range(150)]
    alarms = sum(r.drifted for r in reports)
    # 150 checks at 1 %: 1.5 expected; P(more than 7) < 0.001 for a calibrated detector.
    assert alarms <= 7, f"{alarms} false alarms in 150 stable windows"
    assert all(r.psi_level == "stable" for r in reports)


def test_an_intent_mix_shift_fires_although_raw_psi_looks_stable(baseline) -> None:
    detector = DriftDetector(baseline, DetectorConfig(detectors=("component_psi", "label")))
    rng = np.random.default_rng(12)
    report = detector.check(window_of(baseline, 2000, rng, shifted_weights(3, 0.2)))
    assert report.drifted
    assert report.score("label_chi2").fired
    assert report.psi.mean < 0.1  # the familiar fixed thresholds would never have fired
    for score in report.scores:
        assert score.null_quantile is not None


def test_off_topic_growth_fires_on_embeddings_alone(baseline) -> None:
    detector = DriftDetector(
        baseline, DetectorConfig(detectors=("component_psi", "domain_classifier"))
    )
    rng = np.random.default_rng(13)
    weights = np.append(np.full(12, 0.7 / 12), 0.3)  # 30 % off-topic traffic
    x, _ = TRAFFIC.sample(2000, rng, weights)
    window = SlidingWindow(baseline)
    window.add(x, times(2000))  # unlabelled
    report = detector.check(window.snapshot())
    assert report.drifted
    assert "label" in report.skipped
    assert report.score("domain_auc").value > report.score("domain_auc").null_quantile


def test_only_configured_detectors_decide(baseline) -> None:
    rng = np.random.default_rng(14)
    snapshot = window_of(baseline, 2000, rng, shifted_weights(3, 0.3))
    only_label = DriftDetector(baseline, DetectorConfig(detectors=("label",))).check(snapshot)
    assert only_label.drifted
    assert all(s.detector == "label" for s in only_label.scores if s.fired)
    assert {s.detector for s in only_label.scores} >= {"component_psi", "label"}


def test_small_windows_are_skipped_with_a_reason(baseline) -> None:
    detector = DriftDetector(baseline, DetectorConfig(min_rows=500, min_labelled=500))
    report = detector.check(window_of(baseline, 100, np.random.default_rng(15)))
    assert not report.drifted and report.scores == []
    assert "100 rows < min_rows 500" in report.skipped["component_psi"]
    assert "min_labelled" in report.skipped["label"]


def test_nulls_are_cached_per_window_size(baseline) -> None:
    detector = DriftDetector(baseline, DetectorConfig(detectors=("component_psi",)))
    rng = np.random.default_rng(16)
    detector.check(window_of(baseline, 1000, rng))
    cached = set(detector._nulls)
    assert size_bucket(1000) == size_bucket(1010)
    detector.check(window_of(baseline, 1010, rng))  # same size bucket: nothing new
    assert set(detector._nulls) == cached


def test_label_statistics_pool_unseen_labels() -> None:
    reference = {"a": 50, "b": 50}
    psi_same, chi_same = label_statistics(reference, Counter(a=30, b=30), 1e-3)
    assert psi_same == pytest.approx(0.0, abs=1e-9)
    assert chi_same < 0.1  # only the smoothing of the empty "<other>" category
    psi_new, chi_new = label_statistics(reference, Counter(a=30, b=30, brand_new=30), 1e-3)
    assert psi_new > 0.5 and chi_new > 100


def test_unknown_detector_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown detectors \['vibes'\]; known: .*'label'"):
        DetectorConfig(detectors=("component_psi", "vibes"))


@pytest.fixture
def toy_detector():
    """A detector registered for one test: the share of labelled rows, against a null of 0."""

    @detector("toy")
    def toy(inputs: DriftInputs) -> list[Statistic] | Skipped:
        if inputs.window.labelled == 0:
            return Skipped("no labels")
        return [Statistic("toy_share", inputs.window.labelled / inputs.window.rows, np.zeros(5))]

    yield "toy"
    del DETECTORS["toy"]


def test_a_registered_detector_runs_through_check(baseline, toy_detector) -> None:
    snapshot = window_of(baseline, 1000, np.random.default_rng(17))
    config = DetectorConfig(detectors=("component_psi", toy_detector))
    report = DriftDetector(baseline, config).check(snapshot)
    toy = report.score("toy_share")
    assert toy is not None and toy.detector == "toy"
    assert (toy.value, toy.null_quantile, toy.fired) == (1.0, 0.0, True)
    assert report.drifted
    # Registration order; label is reported but does not decide (nor count for Bonferroni).
    assert [s.statistic for s in report.scores] == [
        "psi_mean", "psi_max", "label_psi", "label_chi2", "toy_share"
    ]  # fmt: skip
    assert not any(s.fired for s in report.scores if s.detector == "label")

    x, _ = TRAFFIC.sample(300, np.random.default_rng(18))
    unlabelled = SlidingWindow(baseline)
    unlabelled.add(x, times(300))
    report = DriftDetector(baseline, config).check(unlabelled.snapshot())
    assert report.skipped["toy"] == "no labels" and report.score("toy_share") is None
    not_configured = DriftDetector(baseline, DetectorConfig(detectors=("component_psi",)))
    assert not_configured.check(snapshot).score("toy_share") is None


def test_a_detector_name_is_registered_once(toy_detector) -> None:
    with pytest.raises(ValueError, match="already registered"):
        detector(toy_detector)(lambda inputs: Skipped("twice"))


def test_a_detector_unregistered_since_the_config_is_refused(
    baseline, toy_detector, monkeypatch
) -> None:
    config = DetectorConfig(detectors=(toy_detector,))
    monkeypatch.delitem(DETECTORS, toy_detector)  # put back before the fixture removes it
    with pytest.raises(ConfigError, match=r"unknown detectors \['toy'\]"):
        DriftDetector(baseline, config)
