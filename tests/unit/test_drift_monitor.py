"""The drift-monitor's decisions per model key: drift, cooldown, new intents, languages."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from driftloop_common.contracts.events import (
    EncoderInfo,
    InteractionEmbedded,
    InteractionEmbeddedEvent,
    ModelKey,
)
from driftloop_common.ml.drift.baseline import DriftBaseline, build_baseline
from driftloop_drift_monitor.monitor import BaselineSource, DriftMonitor, MonitorConfig
from tests.unit.drift_data import ENCODER, T0, Traffic, shifted_weights

TRAFFIC = Traffic(seed=3)
EN, ES = ModelKey.parse("intent/en-us"), ModelKey.parse("intent/es-es")


class Fixed(BaselineSource):
    def __init__(self, baselines: dict[ModelKey, DriftBaseline]) -> None:
        self.baselines = baselines

    def load(self, key: ModelKey) -> DriftBaseline | None:
        return self.baselines.get(key)


@pytest.fixture(scope="module")
def baseline() -> DriftBaseline:
    x, labels = TRAFFIC.sample(6000, np.random.default_rng(0))
    return build_baseline(x, encoder=ENCODER, labels=labels, source="intent-en-us v1")


def stream(key, n, rng, start, weights=None, label_override=None, encoder=ENCODER, hours=12):
    x, labels = TRAFFIC.sample(n, rng, weights)
    step = timedelta(hours=hours) / n
    return [
        InteractionEmbeddedEvent(
            producer="test",
            model_key=key,
            payload=InteractionEmbedded(
                conversation_id=f"c{i}",
                language=key.language,
                completed_at=start + i * step,
                embedding=x[i].tolist(),
                encoder=encoder,
                label=label_override or labels[i],
            ),
        )
        for i in range(n)
    ]


def monitor(baseline, **kw) -> DriftMonitor:
    config = MonitorConfig(
        check_every_rows=1000,
        detectors=("component_psi", "label"),
        min_rows=500,
        **kw,
    )
    return DriftMonitor(config, Fixed({EN: baseline, ES: baseline}))


def test_a_stable_stream_requests_nothing(baseline) -> None:
    m = monitor(baseline)
    out = m.observe(stream(EN, 3000, np.random.default_rng(1), T0))
    assert out == []
    assert m.keys[EN].last_report is not None and not m.keys[EN].last_report.drifted


def test_a_shift_yields_drift_detected_and_a_training_request(baseline) -> None:
    m = monitor(baseline)
    out = m.observe(stream(EN, 2000, np.random.default_rng(2), T0, shifted_weights(5, 0.25)))
    assert [e.event_type for e in out] == ["drift.detected", "training.requested"]
    detected, request = out
    assert request.payload.reason == "drift"
    assert request.correlation_id == detected.correlation_id
    assert request.payload.drift.window_size == 2000
    assert any(s.fired and s.null_quantile is not None for s in detected.payload.scores)


def test_a_second_shift_inside_the_cooldown_requests_nothing(baseline) -> None:
    m = monitor(baseline, cooldown_hours=6)
    rng = np.random.default_rng(3)
    first = m.observe(stream(EN, 2000, rng, T0, shifted_weights(5, 0.25), hours=2))
    assert len(first) == 2
    again = m.observe(
        stream(EN, 2000, rng, T0 + timedelta(hours=3), shifted_weights(7, 0.3), hours=2)
    )
    assert again == []
    later = m.observe(
        stream(EN, 2000, rng, T0 + timedelta(hours=9), shifted_weights(7, 0.3), hours=2)
    )
    assert [e.event_type for e in later] == ["drift.detected", "training.requested"]


def test_fifty_examples_of_an_unknown_label_request_a_new_intent_once(baseline) -> None:
    m = monitor(baseline)
    rng = np.random.default_rng(4)
    m.observe(stream(EN, 600, rng, T0))
    out = m.observe(stream(EN, 49, rng, T0 + timedelta(hours=1), label_override="crypto_wallet"))
    assert out == []
    out = m.observe(stream(EN, 1, rng, T0 + timedelta(hours=2), label_override="crypto_wallet"))
    assert [(e.payload.reason, e.payload.new_label) for e in out] == [
        ("new_intent", "crypto_wallet")
    ]
    more = m.observe(stream(EN, 60, rng, T0 + timedelta(hours=3), label_override="crypto_wallet"))
    assert all(e.payload.reason != "new_intent" for e in more)


def test_a_spanish_only_shift_drifts_spanish_and_not_english(baseline) -> None:
    m = monitor(baseline)
    rng = np.random.default_rng(5)
    events = stream(EN, 2000, rng, T0) + stream(ES, 2000, rng, T0, shifted_weights(2, 0.3))
    out = m.observe(events)
    assert {str(e.model_key) for e in out} == {"intent/es-es"}


def test_other_encoders_are_never_mixed_into_the_window(baseline) -> None:
    m = monitor(baseline)
    int8 = EncoderInfo(id=ENCODER.id, precision="int8")
    m.observe(stream(EN, 300, np.random.default_rng(6), T0, encoder=int8))
    m.observe(stream(EN, 10, np.random.default_rng(7), T0))
    assert m.keys[EN].skipped_encoder == 300
    assert m.keys[EN].window.snapshot().rows == 10
    broken = stream(EN, 5, np.random.default_rng(8), T0)
    broken = [
        e.model_copy(update={"payload": e.payload.model_copy(update={"embedding": [0.1] * 7})})
        for e in broken
    ]
    m.observe(broken)  # a wrong dimension is skipped and counted, never a crash
    assert m.keys[EN].skipped_dimension == 5


def test_without_a_champion_the_first_rows_become_the_baseline() -> None:
    config = MonitorConfig(
        bootstrap_rows=2000,
        check_every_rows=1000,
        detectors=("component_psi",),
        min_rows=500,
    )
    m = DriftMonitor(config)
    rng = np.random.default_rng(8)
    assert m.observe(stream(EN, 2000, rng, T0)) == []
    assert m.keys[EN].baseline.source.startswith("bootstrap: first 2000")
    assert m.keys[EN].window.snapshot().rows == 0  # bootstrap rows are not scored
    off_topic = np.append(np.full(12, 0.6 / 12), 0.4)  # a cluster the baseline never saw
    out = m.observe(stream(EN, 2000, rng, T0 + timedelta(days=1), off_topic))
    assert "drift.detected" in [e.event_type for e in out]
    reasons = {e.payload.reason for e in out if e.event_type == "training.requested"}
    assert reasons == {"drift", "new_intent"}  # it also carries a label never seen before


def test_decisions_are_deterministic_for_a_replay(baseline) -> None:
    events = stream(EN, 2000, np.random.default_rng(9), T0, shifted_weights(5, 0.25))
    first = monitor(baseline).observe(events)
    replay = monitor(baseline)
    second = replay.observe(events[:700]) + replay.observe(events[700:])
    assert [e.event_id for e in first] == [e.event_id for e in second]


def test_without_a_champion_the_oldest_stored_rows_become_the_baseline(tmp_path) -> None:
    from driftloop_common.storage.interactions import InteractionStore
    from driftloop_drift_monitor.baselines import StoreBaselineSource

    rng = np.random.default_rng(10)
    store = InteractionStore(str(tmp_path / "store"))
    vectors = rng.normal(size=(1500, 384)).astype(np.float32)
    store.append(
        InteractionEmbedded(
            conversation_id=f"c{i}",
            language="en-us",
            completed_at=T0 + timedelta(minutes=i),
            embedding=vectors[i].tolist(),
            encoder=ENCODER,
            label="early" if i < 1200 else "late",
        )
        for i in range(1500)
    )
    config = MonitorConfig(bootstrap_rows=1200)
    source = StoreBaselineSource(str(tmp_path / "store"), config, ENCODER)
    baseline = source.load(EN)
    assert baseline is not None
    assert baseline.source == "bootstrap: oldest 1200 rows of en-us in the store"
    assert baseline.label_set == {"early"}  # only the oldest rows
    assert source.load(ModelKey.parse("intent/es-es")) is None  # nothing stored for Spanish
