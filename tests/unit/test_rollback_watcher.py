"""The rollback-watcher: window math, the confidence and estimate rules with their N,
anti-flap, other versions ignored, deterministic ids, and the service over fake clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import generate_latest

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Event,
    ModelKey,
    ModelPromoted,
    ModelPromotedEvent,
    ModelRolledBack,
    ModelRolledBackEvent,
    Prediction,
    PredictionEvent,
    RollbackRequestedEvent,
    decode_event,
)
from driftloop_common.runtime import kafka as kafka_module
from driftloop_common.runtime.loop import RetryPolicy, ServiceLoop
from driftloop_rollback_watcher.service import RollbackWatcherService
from driftloop_rollback_watcher.settings import RollbackWatcherSettings
from driftloop_rollback_watcher.watch import ConfidenceWindow, RollbackWatcher, WatchConfig
from tests.unit.fakes import FakeConsumer, FakeProducer, FakeRecord

EN = ModelKey.parse("intent/en-us")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def promoted(version: int, at: datetime = T0, confidence: float | None = 0.9, accuracy=None):
    return ModelPromotedEvent(
        producer="promoter",
        model_key=EN,
        occurred_at=at,
        payload=ModelPromoted(
            registered_model="intent-en-us",
            version=version,
            previous_version=version - 1 or None,
            targets=["predictor"],
            confidence_at_promotion=confidence,
            expected_accuracy=accuracy,
        ),
    )


def rolled_back(from_version: int, to_version: int, at: datetime) -> ModelRolledBackEvent:
    return ModelRolledBackEvent(
        producer="promoter",
        model_key=EN,
        occurred_at=at,
        payload=ModelRolledBack(
            registered_model="intent-en-us",
            from_version=from_version,
            to_version=to_version,
            reason="test",
        ),
    )


def prediction(version: int, confidence: float, at: datetime) -> PredictionEvent:
    return PredictionEvent(
        producer="predictor",
        model_key=EN,
        occurred_at=at,
        payload=Prediction(version=version, label="billing", confidence=confidence, served_by="t"),
    )


def stream(version: int, confidences: list[float], start: datetime = T0) -> list[PredictionEvent]:
    return [
        prediction(version, c, start + timedelta(seconds=i + 1)) for i, c in enumerate(confidences)
    ]


def feed(watcher: RollbackWatcher, events: list[PredictionEvent]) -> list[Event]:
    return [out for e in events for out in watcher.observe(e)]


def watcher(**config: Any) -> RollbackWatcher:
    return RollbackWatcher(WatchConfig(**{"min_predictions": 10, **config}))


# ---------------------------------------------------------------- window math


def test_the_window_mean_is_exact_and_old_entries_leave_it() -> None:
    window = ConfidenceWindow()
    for i, c in enumerate([0.5, 0.7, 0.9]):
        window.add(T0 + timedelta(minutes=i), c)
    assert len(window) == 3 and window.mean == pytest.approx(0.7)
    window.drop_before(T0 + timedelta(minutes=1))
    assert len(window) == 2 and window.mean == pytest.approx(0.8)
    window.add(T0, 0.2)  # late: kept in time order
    assert window.newest == T0 + timedelta(minutes=2)
    window.drop_before(T0 + timedelta(seconds=30))
    assert window.mean == pytest.approx(0.8)
    window.drop_before(T0 + timedelta(hours=1))
    assert len(window) == 0 and window.mean is None


def test_the_window_spans_15_minutes_of_event_time() -> None:
    w = watcher()
    w.apply(promoted(1))
    w.observe(prediction(1, 0.9, T0 + timedelta(minutes=1)))
    w.observe(prediction(1, 0.5, T0 + timedelta(minutes=10)))
    assert len(w.keys[EN].window) == 2
    w.observe(prediction(1, 0.7, T0 + timedelta(minutes=16, seconds=1)))  # the first leaves
    assert len(w.keys[EN].window) == 2
    assert w.keys[EN].window.mean == pytest.approx(0.6)
    w.observe(prediction(1, 0.1, T0 + timedelta(minutes=1)))  # older than the window
    assert w.ignored[(EN, "stale")] == 1


# ---------------------------------------------------------------- the confidence rule


def test_a_drop_of_more_than_10_percent_with_n_predictions_requests_a_rollback() -> None:
    w = watcher()
    w.apply(promoted(1))
    w.apply(promoted(2, T0 + timedelta(seconds=1)))
    assert feed(w, stream(2, [0.80] * 9, T0 + timedelta(seconds=1))) == []  # 9 < N
    [request] = w.observe(prediction(2, 0.80, T0 + timedelta(seconds=20)))
    assert isinstance(request, RollbackRequestedEvent)
    assert request.payload.requested_by == "rollback-watcher"
    assert request.payload.to_version is None  # the promoter takes the previous champion
    reason = request.payload.reason
    assert "confidence" in reason and "0.800" in reason and "0.900" in reason
    assert "10 predictions" in reason and "estimate" not in reason
    assert w.requested[(EN, "confidence")] == 1


def test_a_drop_of_10_percent_or_less_requests_nothing() -> None:
    w = watcher()
    w.apply(promoted(1))
    assert feed(w, stream(1, [0.811] * 50)) == []  # 0.811 > 0.9 × 0.9
    check = w.last_checks[EN]
    assert check.n == 50 and check.mean == pytest.approx(0.811) and check.signals == ()


def test_a_request_is_made_once_per_version() -> None:
    w = watcher()
    w.apply(promoted(1))
    assert len(feed(w, stream(1, [0.5] * 40))) == 1


def test_the_drop_threshold_is_configurable() -> None:
    w = watcher(confidence_drop=0.3)
    w.apply(promoted(1))
    assert feed(w, stream(1, [0.7] * 20)) == []  # 22 % below: under 30 %
    assert len(feed(w, stream(1, [0.5] * 20, T0 + timedelta(seconds=30)))) == 1


# ---------------------------------------------------------------- the estimate rule


def test_the_estimate_below_the_promotions_accuracy_is_a_second_signal() -> None:
    w = watcher()
    w.apply(promoted(1, confidence=None, accuracy=0.95))
    assert feed(w, stream(1, [0.86] * 20)) == []  # 0.09 below: within 0.10
    w = watcher()
    w.apply(promoted(1, confidence=0.80, accuracy=0.95))
    [request] = feed(w, stream(1, [0.84] * 10))  # confidence fine (≥ 0.72), estimate not
    assert request.payload.reason.count("estimate:") == 1
    assert "confidence:" not in request.payload.reason and "0.950" in request.payload.reason
    assert w.requested[(EN, "estimate")] == 1 and w.requested[(EN, "confidence")] == 0


def test_both_signals_are_named_when_both_fire() -> None:
    w = watcher()
    w.apply(promoted(1, confidence=0.9, accuracy=0.9))
    [request] = feed(w, stream(1, [0.5] * 10))
    assert "confidence:" in request.payload.reason and "estimate:" in request.payload.reason


# ---------------------------------------------------------------- anti-flap and references


def test_a_restored_version_is_not_rolled_back_within_the_cooldown() -> None:
    w = watcher(cooldown_minutes=60)
    w.apply(promoted(1))
    w.apply(promoted(2, T0 + timedelta(minutes=1)))
    back = T0 + timedelta(minutes=5)
    restore = rolled_back(2, 1, back)
    w.apply(restore)
    assert w.keys[EN].version == 1 and w.keys[EN].restored
    assert w.keys[EN].reference is not None and w.keys[EN].reference.confidence == 0.9
    assert feed(w, stream(1, [0.5] * 20, back)) == []
    assert w.held[(EN, "cooldown")] == 11
    [request] = feed(w, stream(1, [0.5] * 10, back + timedelta(minutes=61)))
    # seeded by the rollback that made v1 live
    assert request.event_id == uuid.uuid5(
        restore.event_id, "rollback-watcher:rollback.requested:v1"
    )


def test_a_restored_version_without_a_seen_promotion_decides_nothing_until_seen() -> None:
    w = watcher(cooldown_minutes=0)
    back = T0 + timedelta(minutes=5)
    w.apply(rolled_back(2, 1, back))
    assert w.keys[EN].reference is None
    assert feed(w, stream(1, [0.5] * 20, back)) == []
    assert w.held[(EN, "no_reference")] == 11
    w.apply(promoted(1))  # older: v1 stays live, its reference is known now
    assert w.keys[EN].version == 1 and w.keys[EN].reference is not None
    assert len(feed(w, stream(1, [0.5], back + timedelta(minutes=1)))) == 1


def test_predictions_of_other_versions_are_ignored_and_counted() -> None:
    w = watcher()
    assert feed(w, stream(1, [0.1] * 3)) == []
    assert w.ignored[(EN, "no_live_version")] == 3
    w.apply(promoted(1))
    w.apply(promoted(2, T0 + timedelta(seconds=1)))
    assert feed(w, stream(1, [0.1] * 30)) == []  # the old champion's stragglers
    assert w.ignored[(EN, "other_version")] == 30
    assert len(w.keys[EN].window) == 0


def test_a_replayed_or_older_state_event_changes_nothing_live() -> None:
    w = watcher()
    first, second = promoted(1), promoted(2, T0 + timedelta(minutes=1))
    w.apply(first)
    w.apply(second)
    feed(w, stream(2, [0.9] * 5, T0 + timedelta(minutes=1)))
    assert not w.apply(second)  # a redelivery: the window stays
    assert not w.apply(promoted(1, T0 - timedelta(days=1)))  # older
    assert w.keys[EN].version == 2 and len(w.keys[EN].window) == 5


# ---------------------------------------------------------------- deterministic ids


def decide(w: RollbackWatcher, promotion: ModelPromotedEvent) -> RollbackRequestedEvent:
    w.apply(promotion)
    [request] = feed(w, stream(promotion.payload.version, [0.5] * 10))
    assert isinstance(request, RollbackRequestedEvent)
    return request


def test_the_request_id_derives_from_the_promotion_so_a_restart_makes_the_same() -> None:
    promotion = promoted(3)
    one, two = decide(watcher(), promotion), decide(watcher(), promotion)
    assert one.event_id == two.event_id
    assert one.correlation_id == promotion.correlation_id
    assert decide(watcher(), promoted(3)).event_id != one.event_id  # another promotion


def test_a_request_read_back_at_start_up_is_not_made_again() -> None:
    promotion = promoted(3)
    earlier = decide(watcher(), promotion)
    w = watcher()
    w.remember_request(earlier)
    w.apply(promotion)
    assert feed(w, stream(3, [0.5] * 10)) == []
    assert w.keys[EN].requested


# ---------------------------------------------------------------- the service


class SeekingConsumer(FakeConsumer):
    """The fake consumer plus what `on_assigned` calls; it records the seeks."""

    seeks: list

    async def offsets_for_times(self, timestamps: dict) -> dict:
        self.seeks = []
        return {tp: None for tp in timestamps}

    async def seek_to_end(self, tp: TopicPartition) -> None:
        self.seeks.append(("end", tp))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((offset, tp))


def settings(**kw: Any) -> RollbackWatcherSettings:
    return RollbackWatcherSettings(service_name="rollback-watcher-test", min_predictions=10, **kw)


async def run_loop(service: RollbackWatcherService, events: list[Event]) -> tuple:
    records = [FakeRecord(e.topic, 0, i, e.to_bytes(), key=e.key) for i, e in enumerate(events)]
    journal: list = []
    consumer, producer = SeekingConsumer(journal, [records]), FakeProducer(journal)
    loop = ServiceLoop(
        service=service.settings.service_name,
        topics=list(service.topics),
        decode=service.decode,
        handle=service.handle,
        consumer=consumer,
        producer=producer,
        metrics=service.metrics,
        retry=RetryPolicy(attempts=3, initial_backoff_s=0, max_backoff_s=0),
        max_batch_records=len(records),
        flush=service.flush,
        on_assigned=service.on_assigned,
    )
    consumer.on_empty = loop.stop
    await asyncio.wait_for(loop.run(), 60)
    return consumer, producer


async def test_the_service_publishes_the_request_commits_and_shows_the_estimate() -> None:
    service = RollbackWatcherService(settings())
    events: list[Event] = [promoted(1), promoted(2, T0 + timedelta(seconds=1))]
    events += [prediction(1, 0.99, T0 + timedelta(seconds=2))]
    events += stream(2, [0.5] * 10, T0 + timedelta(seconds=2))
    consumer, producer = await run_loop(service, events)
    assert consumer.committed[TopicPartition(topics.PREDICTIONS, 0)] == len(events)
    assert [s[0] for s in producer.sent] == [topics.ROLLBACK_REQUESTED]
    request = decode_event(producer.sent[0][1])
    assert isinstance(request, RollbackRequestedEvent) and "v2" in request.payload.reason
    assert {tp.topic for _, tp in consumer.seeks} == {topics.PREDICTIONS}
    metrics = generate_latest(service.metrics.registry).decode()
    prefix = "driftloop_rollback_watcher_test_"
    label = '{model_key="intent/en-us"}'
    assert f"{prefix}expected_accuracy{label} 0.5" in metrics
    assert f"{prefix}window_mean_confidence{label} 0.5" in metrics
    assert f"{prefix}window_predictions{label} 10.0" in metrics
    assert f"{prefix}reference_confidence{label} 0.9" in metrics
    assert (
        f'{prefix}ignored_predictions_total{{model_key="intent/en-us",reason="other_version"}} 1.0'
        in metrics
    )
    assert (
        f'{prefix}rollbacks_requested_total{{model_key="intent/en-us",signal="confidence"}} 1.0'
        in metrics
    )


async def test_start_up_rebuilds_what_is_live_from_the_history_in_time_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, v2 = promoted(1), promoted(2, T0 + timedelta(minutes=1))
    back = rolled_back(2, 1, T0 + timedelta(minutes=2))
    earlier = decide(watcher(), v1)
    history = {
        topics.MODEL_PROMOTED: [v2, v1],  # two partitions: not in time order
        topics.MODEL_ROLLED_BACK: [back],
        topics.ROLLBACK_REQUESTED: [earlier],
    }

    async def read_since(kafka: Any, topic: str, since: datetime, **kw: Any) -> AsyncIterator:
        for event in history[topic]:
            yield FakeRecord(topic, 0, 0, event.to_bytes())
        yield FakeRecord(topic, 0, 1, b"not json")  # skipped

    monkeypatch.setattr(kafka_module, "read_since", read_since)  # what events_since reads
    service = RollbackWatcherService(settings())
    await service.on_start()
    live = service.watcher.keys[EN]
    assert (live.version, live.restored, live.cause.event_id) == (1, True, back.event_id)
    assert live.reference is not None and live.reference.confidence == 0.9
    assert service.restored == 3


def test_the_estimate_needs_the_drop_beyond_its_own_bootstrap_band() -> None:
    spread = [1.0, 0.5]  # mean 0.75: 0.15 below the promotion's 0.90, but noisy
    w = watcher(min_predictions=8)
    w.apply(promoted(1, confidence=None, accuracy=0.9))
    assert feed(w, stream(1, spread * 4)) == []  # 8 such points: 0.90 is inside the band
    check = w.last_checks[EN]
    assert check.band is not None and check.band[0] < 0.75 < 0.9 <= check.band[1]

    w = watcher(min_predictions=400)
    w.apply(promoted(1, confidence=None, accuracy=0.9))
    [request] = feed(w, stream(1, spread * 200))  # the same spread, 400 points: beyond it
    assert "estimate:" in request.payload.reason and "band" in request.payload.reason
    band = w.last_checks[EN].band
    assert band is not None and band[0] < 0.75 < band[1] < 0.9
