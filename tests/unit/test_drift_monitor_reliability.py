"""The drift-monitor loses no row on an error (issue 9): a flush that fails is retried
with the same rows, a baseline that cannot be loaded makes the key wait (never bootstrap),
a re-emitted interaction counts once, and the history replay runs in `on_start`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import RetryableError
from driftloop_common.contracts.events import (
    InteractionEmbedded,
    InteractionEmbeddedEvent,
    ModelKey,
)
from driftloop_common.ml.drift.baseline import DriftBaseline, build_baseline
from driftloop_common.ml.drift.detect import DriftDetector
from driftloop_common.ml.drift.window import SlidingWindow
from driftloop_common.runtime.app import create_app
from driftloop_common.runtime.loop import LoopState, RetryPolicy, ServiceLoop
from driftloop_drift_monitor import __main__ as entry
from driftloop_drift_monitor import service as service_module
from driftloop_drift_monitor.monitor import BaselineSource, DriftMonitor, MonitorConfig
from driftloop_drift_monitor.service import DriftMonitorService
from driftloop_drift_monitor.settings import DriftMonitorSettings
from tests.unit.drift_data import ENCODER, T0, Traffic, shifted_weights
from tests.unit.fakes import FakeConsumer, FakeProducer, FakeRecord

TRAFFIC = Traffic(seed=3)
EN = ModelKey.parse("intent/en-us")
TP = TopicPartition(topics.INTERACTIONS_EMBEDDED, 0)


@pytest.fixture(scope="module")
def baseline() -> DriftBaseline:
    x, labels = TRAFFIC.sample(6000, np.random.default_rng(0))
    return build_baseline(x, encoder=ENCODER, labels=labels, source="intent-en-us v1")


def stream(n, seed=1, start=T0, weights=None, label=None, hours=12.0):
    x, labels = TRAFFIC.sample(n, np.random.default_rng(seed), weights)
    step = timedelta(hours=hours) / n
    return [
        InteractionEmbeddedEvent(
            producer="test",
            model_key=EN,
            payload=InteractionEmbedded(
                conversation_id=f"c{seed}-{i}",
                language=EN.language,
                completed_at=start + i * step,
                embedding=x[i].tolist(),
                encoder=ENCODER,
                label=label or labels[i],
            ),
        )
        for i in range(n)
    ]


def stamped(event: InteractionEmbeddedEvent, when: datetime) -> InteractionEmbeddedEvent:
    return event.model_copy(
        update={"payload": event.payload.model_copy(update={"completed_at": when})}
    )


class Fixed(BaselineSource):
    def __init__(self, baseline: DriftBaseline | None) -> None:
        self.baseline = baseline
        self.calls = 0

    def load(self, key: ModelKey) -> DriftBaseline | None:
        self.calls += 1
        return self.baseline


class Flaky(BaselineSource):
    """MLflow answering 503 `failures` times, then the champion's baseline."""

    def __init__(self, baseline: DriftBaseline, failures: int) -> None:
        self.baseline = baseline
        self.failures = failures
        self.calls = 0

    def load(self, key: ModelKey) -> DriftBaseline | None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RetryableError("MLflow: 503 Service Unavailable")
        return self.baseline


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings(**kw: Any) -> DriftMonitorSettings:
    values: dict[str, Any] = {
        "service_name": "drift-monitor-test",
        "check_every_rows": 1000,
        "min_rows": 500,
        "detectors": ("component_psi", "label"),
        "bootstrap_rows": 2000,
    }
    return DriftMonitorSettings(**(values | kw))


def monitor(source: BaselineSource, **kw: Any) -> DriftMonitor:
    config = MonitorConfig(
        check_every_rows=1000,
        detectors=("component_psi", "label"),
        min_rows=500,
        **kw,
    )
    return DriftMonitor(config, source)


def window_rows(m: DriftMonitor) -> int:
    return m.keys[EN].window.snapshot().rows


class FailOnce:
    """Patches `owner.name` to raise once, then behave as before."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        original = getattr(owner, name)
        self.calls = 0

        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError(f"injected failure in {owner.__name__}.{name}")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, failing)


class SeekingConsumer(FakeConsumer):
    """The fake consumer plus what `DriftMonitorService.on_assigned` calls."""

    async def offsets_for_times(self, timestamps: dict) -> dict:
        return {tp: None for tp in timestamps}

    async def seek_to_end(self, tp: TopicPartition) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass


async def run_loop(service: DriftMonitorService, events: list) -> SeekingConsumer:
    """The real service loop over fake clients: one batch, then stop."""
    records = [FakeRecord(TP.topic, 0, i, e.to_bytes(), key=e.key) for i, e in enumerate(events)]
    journal: list = []
    consumer = SeekingConsumer(journal, [records])
    loop = ServiceLoop(
        service=service.settings.service_name,
        topics=[TP.topic],
        decode=service.decode,
        handle=service.handle,
        consumer=consumer,
        producer=FakeProducer(journal),
        metrics=service.metrics,
        retry=RetryPolicy(attempts=3, initial_backoff_s=0, max_backoff_s=0),
        max_batch_records=len(records),
        flush=service.flush,
        on_assigned=service.on_assigned,
    )
    consumer.on_empty = loop.stop
    await asyncio.wait_for(loop.run(), 60)
    return consumer


# ---------------------------------------------------------------- a flush loses no row


async def test_a_window_error_in_a_flush_is_retried_with_the_same_300_rows(
    baseline, monkeypatch
) -> None:
    service = DriftMonitorService(settings(), Fixed(baseline))
    failure = FailOnce(monkeypatch, SlidingWindow, "add")
    consumer = await run_loop(service, stream(300))
    assert consumer.committed[TP] == 300
    assert window_rows(service.monitor) == 300  # committed, and observed
    assert failure.calls == 2  # the loop's retry of the flush added them


async def test_a_row_of_year_1_is_skipped_and_counted_and_the_other_299_are_observed(
    baseline,
) -> None:
    events = stream(300)
    events[150] = stamped(events[150], datetime(1, 1, 1, tzinfo=UTC))
    service = DriftMonitorService(settings(), Fixed(baseline))
    consumer = await run_loop(service, events)
    assert consumer.committed[TP] == 300
    assert window_rows(service.monitor) == 299
    assert service.monitor.keys[EN].skipped_time == 1
    metrics = generate_latest(service.metrics.registry).decode()
    assert (
        'driftloop_drift_monitor_test_skipped_rows_total{model_key="intent/en-us",'
        'reason="time"} 1.0' in metrics
    )


def test_a_row_of_year_9999_does_not_empty_the_window(baseline) -> None:
    m = monitor(Fixed(baseline))
    events = stream(300)
    events.append(stamped(stream(1, seed=2)[0], datetime(9999, 1, 1, tzinfo=UTC)))
    m.observe(events)
    assert window_rows(m) == 300
    assert m.keys[EN].skipped_time == 1


def test_non_finite_embeddings_are_skipped_and_counted(baseline) -> None:
    m = monitor(Fixed(baseline))
    events = stream(10)
    events[3] = events[3].model_copy(
        update={
            "payload": events[3].payload.model_copy(
                update={"embedding": [float("nan")] * len(events[3].payload.embedding)}
            )
        }
    )
    m.observe(events)
    assert window_rows(m) == 9
    assert m.keys[EN].skipped_nonfinite == 1


async def test_a_failing_drift_check_is_made_by_the_retried_flush_as_by_a_clean_one(
    baseline, monkeypatch
) -> None:
    events = stream(1000, seed=2, weights=shifted_weights(5, 0.25))
    clean = DriftMonitorService(settings(), Fixed(baseline))
    for event in events:
        await clean.handle(event)
    expected = await clean.flush()
    assert [e.event_type for e in expected] == ["drift.detected", "training.requested"]

    service = DriftMonitorService(settings(), Fixed(baseline))
    for event in events:
        await service.handle(event)
    FailOnce(monkeypatch, DriftDetector, "check")
    with pytest.raises(RuntimeError, match="injected"):
        await service.flush()
    again = await service.flush()  # what the loop's retry does
    assert [e.event_id for e in again] == [e.event_id for e in expected]
    assert window_rows(service.monitor) == 1000
    assert service.monitor.keys[EN].duplicates == 0  # a retry is not a re-emission


async def test_a_new_intent_request_is_not_lost_when_the_check_after_it_fails(
    baseline, monkeypatch
) -> None:
    events = stream(940, seed=3) + stream(60, seed=4, start=T0 + timedelta(hours=1), label="crypto")
    service = DriftMonitorService(settings(), Fixed(baseline))
    for event in events:
        await service.handle(event)
    FailOnce(monkeypatch, DriftDetector, "check")  # the 1000th row makes a check due
    with pytest.raises(RuntimeError, match="injected"):
        await service.flush()
    out = await service.flush()
    requests = [e for e in out if e.event_type == "training.requested"]
    assert ("new_intent", "crypto") in [(e.payload.reason, e.payload.new_label) for e in requests]
    assert service.monitor.keys[EN].last_report is not None


def test_an_error_in_the_window_update_leaves_the_key_as_it_was(baseline, monkeypatch) -> None:
    m = monitor(Fixed(baseline))
    m.observe(stream(100, seed=5))
    state = m.keys[EN]
    FailOnce(monkeypatch, SlidingWindow, "add")
    events = stream(200, seed=6, start=T0 + timedelta(hours=13))
    with pytest.raises(RuntimeError, match="injected"):
        m.observe(events)
    assert (window_rows(m), state.rows_since_check, len(state.seen)) == (100, 100, 100)
    m.observe(events)  # the same rows again: all of them are new to the window
    assert (window_rows(m), state.duplicates) == (300, 0)


# ---------------------------------------------------------------- baseline loads


def test_a_503_of_the_baseline_source_is_retried_and_the_champion_used_never_a_bootstrap(
    baseline,
) -> None:
    source = Flaky(baseline, failures=1)
    m = monitor(source, bootstrap_rows=100)
    clock = m.clock = Clock(T0 + timedelta(days=1))
    events = stream(300)
    with pytest.raises(RetryableError):
        m.observe(events)
    with pytest.raises(RetryableError):  # inside the backoff: the source is not asked
        m.observe(events)
    assert source.calls == 1
    assert EN not in m.keys  # 300 rows > bootstrap_rows: still no bootstrap
    clock.now += timedelta(seconds=1)
    m.observe(events)
    assert source.calls == 2
    assert m.keys[EN].baseline.source == "intent-en-us v1"
    assert window_rows(m) == 300


def test_the_backoff_doubles_up_to_its_cap(baseline) -> None:
    source = Flaky(baseline, failures=10)
    m = monitor(source, baseline_retry_max_s=5)
    clock = m.clock = Clock(T0 + timedelta(days=1))
    waits = []
    for _ in range(5):
        with pytest.raises(RetryableError):
            m.observe(stream(5))
        status = m.baselines[EN]
        assert status.state == "unavailable" and status.retry_at is not None
        waits.append((status.retry_at - clock.now).total_seconds())
        clock.now = status.retry_at
    assert waits == [1, 2, 4, 5, 5]
    assert source.calls == 5


async def test_rows_wait_while_the_baseline_is_unavailable_and_readyz_and_metrics_say_so(
    baseline,
) -> None:
    source = Flaky(baseline, failures=2)
    service = DriftMonitorService(settings(), source)
    clock = service.monitor.clock = Clock(T0 + timedelta(days=1))
    for event in stream(300):
        await service.handle(event)
    assert await service.flush() == []  # nothing raised, nothing observed, nothing dropped

    state = LoopState(joined_group=True, producer_started=True)
    app = create_app(
        service="drift-monitor",
        state=state,
        registry=service.metrics.registry,
        ready_checks={"drift_baselines_available": service.baselines_available},
    )
    http = TestClient(app)
    unavailable = (
        'driftloop_drift_monitor_test_baseline_state{model_key="intent/en-us",state="unavailable"}'
    )
    loaded = 'driftloop_drift_monitor_test_baseline_state{model_key="intent/en-us",state="loaded"}'
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["drift_baselines_available"] is False
    metrics = http.get("/metrics").text
    assert f"{unavailable} 1.0" in metrics
    assert 'driftloop_drift_monitor_test_pending_rows{model_key="intent/en-us"} 300.0' in metrics
    assert (
        'driftloop_drift_monitor_test_baseline_load_failures_total{model_key="intent/en-us"} 1.0'
        in metrics
    )

    for event in stream(100, seed=2, start=T0 + timedelta(hours=13)):
        await service.handle(event)
    clock.now += timedelta(seconds=1)
    assert await service.flush() == []  # the second 503
    assert http.get("/readyz").status_code == 503
    clock.now += timedelta(seconds=2)
    await service.flush()
    assert service.monitor.keys[EN].baseline.source == "intent-en-us v1"
    assert window_rows(service.monitor) == 400
    assert http.get("/readyz").status_code == 200
    metrics = http.get("/metrics").text
    assert f"{unavailable} 0.0" in metrics and f"{loaded} 1.0" in metrics
    assert 'driftloop_drift_monitor_test_pending_rows{model_key="intent/en-us"} 0.0' in metrics
    assert (
        'driftloop_drift_monitor_test_baseline_load_failures_total{model_key="intent/en-us"} 2.0'
        in metrics
    )


async def test_past_the_pending_bound_the_flush_fails_and_keeps_the_rows(baseline) -> None:
    source = Flaky(baseline, failures=100)
    service = DriftMonitorService(settings(baseline_pending_max_rows=100), source)
    service.monitor.clock = Clock(T0 + timedelta(days=1))
    for event in stream(150):
        await service.handle(event)
    with pytest.raises(RetryableError, match="150 rows of intent/en-us wait"):
        await service.flush()
    source.failures = 0
    service.monitor.clock.now += timedelta(minutes=5)
    await service.flush()  # the loop's retry: the same 150 rows
    assert window_rows(service.monitor) == 150


def test_a_source_that_answers_none_lets_the_key_bootstrap(baseline) -> None:
    m = monitor(Fixed(None), bootstrap_rows=200)
    m.observe(stream(300))
    assert m.keys[EN].baseline.source.startswith("bootstrap: first 200")
    assert m.baselines[EN].state == "loaded"
    assert window_rows(m) == 100  # the rows after the bootstrap rows


# ---------------------------------------------------------------- re-emissions


def test_a_re_emitted_interaction_is_counted_once_in_the_window_and_its_labels(
    baseline,
) -> None:
    m = monitor(Fixed(baseline))
    events = stream(300)
    m.observe(events)
    labels = m.keys[EN].window.label_counts()
    # The collector re-emits after a restart: same event ids, here with fewer pieces.
    again = [
        e.model_copy(update={"payload": e.payload.model_copy(update={"text": "x"})}) for e in events
    ]
    m.observe(again[:150])
    m.observe(again)
    assert window_rows(m) == 300
    assert m.keys[EN].window.label_counts() == labels
    assert m.keys[EN].duplicates == 450


def test_a_re_emission_does_not_make_a_new_intent(baseline) -> None:
    m = monitor(Fixed(baseline))
    m.observe(stream(300))
    unseen = stream(30, seed=2, start=T0 + timedelta(hours=13), label="crypto")
    assert m.observe(unseen) == []
    assert m.observe(unseen) == []  # 60 rows, 30 interactions: under the 50 needed
    assert m.keys[EN].window.label_counts()["crypto"] == 30


def test_a_re_emission_during_the_bootstrap_is_not_used_twice() -> None:
    m = monitor(Fixed(None), bootstrap_rows=200)
    first = stream(150)
    m.observe(first)
    m.observe(first)
    assert EN not in m.keys  # 150 interactions, not 300 rows
    m.observe(stream(60, seed=2, start=T0 + timedelta(hours=13)))
    assert m.keys[EN].baseline.source.startswith("bootstrap: first 200")
    m.observe(first)  # already in the baseline: not scored against it either
    assert window_rows(m) == 10


def test_seen_event_ids_leave_with_the_window_and_are_capped(baseline) -> None:
    m = monitor(Fixed(baseline))
    m.observe(stream(300))  # T0 … T0 + 12 h
    m.observe(stream(300, seed=2, start=T0 + timedelta(hours=40)))
    assert len(m.keys[EN].seen) == 300  # the first 300 left with their hours

    capped = monitor(Fixed(baseline), dedup_max_ids=250)
    capped.observe(stream(300))  # 25 rows an hour
    assert len(capped.keys[EN].seen) == 250  # the two oldest hours went first


# ---------------------------------------------------------------- start-up order


def test_main_replays_the_history_in_on_start_after_run_service_set_up_logging(
    monkeypatch,
) -> None:
    order: list[str] = []

    async def restore_history(kafka, monitor, since) -> int:
        order.append("restore_history")
        return 3

    passed: dict[str, Any] = {}

    def run_service(settings, service) -> None:
        order.append("run_service")  # configures logging and redaction, then on_start
        passed["service"] = service
        asyncio.run(service.on_start())

    monkeypatch.setattr(entry, "load_settings", lambda cls: settings())
    monkeypatch.setattr(service_module, "limit_blas_threads", lambda threads: None)
    monkeypatch.setattr(service_module, "restore_history", restore_history)
    monkeypatch.setattr(entry, "run_service", run_service)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "7")  # main() only sets them when unset; restored after
    entry.main()
    assert order == ["run_service", "restore_history"]
    assert callable(passed["service"].ready_checks()["drift_baselines_available"])
