"""The drift-monitor service: `DriftMonitor` (monitor.py) wired to the loop.

Kafka wiring of `DriftMonitor`: embedded interactions are buffered per model key and
observed once per poll (batched projection and binning); promotions and rollbacks reload
the key's baseline. Nothing is kept only in memory: on every partition assignment the
window is rebuilt by seeking `interactions.embedded` to `now - window`
(`offsets_for_times`), and cooldowns are restored from the `training.requested` history
at start-up (in the runtime's `on_start`, once logging and redaction are set up).

No error loses a batch: a key's buffered rows are released only once `observe_key`
succeeded for them, so the loop's retry of a failed flush sees the same rows (decisions
of keys already observed are kept and published with the next successful flush).
While a key's baseline cannot be loaded (MLflow down), its rows stay buffered, at most
`baseline_pending_max_rows` of them; the other keys go on, `/readyz` answers 503
(`drift_baselines_available`) and `driftloop_drift_monitor_baseline_state{state="unavailable"}`
is 1 for the key. Past that bound the flush raises `RetryableError`: the loop retries,
then the process exits, and the restart rebuilds the windows from Kafka by time — the
rows are not lost, only re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from threadpoolctl import threadpool_limits

from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import RetryableError
from driftloop_common.contracts.events import (
    EncoderInfo,
    Event,
    InteractionEmbeddedEvent,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.ml.encoder import MODEL_ID
from driftloop_common.runtime.app import ReadyCheck
from driftloop_common.runtime.kafka import TopicPartition, events_since
from driftloop_common.runtime.loop import Consumer, Record, seek_to_time
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter, gauge
from driftloop_common.runtime.service import ServiceBase
from driftloop_common.runtime.settings import KafkaSettings
from driftloop_drift_monitor.baselines import (
    ChainedBaselineSource,
    MlflowBaselineSource,
    StoreBaselineSource,
)
from driftloop_drift_monitor.monitor import (
    BASELINE_STATES,
    SERVICE,
    SKIP_REASONS,
    BaselineSource,
    BaselineUnavailable,
    DriftMonitor,
)
from driftloop_drift_monitor.settings import DriftMonitorSettings

log = logging.getLogger(__name__)
ACCEPTED = (InteractionEmbeddedEvent, ModelPromotedEvent, ModelRolledBackEvent)
TOPICS = (topics.INTERACTIONS_EMBEDDED, topics.MODEL_PROMOTED, topics.MODEL_ROLLED_BACK)


class DriftMetrics(MetricSet):
    statistic = gauge(
        "statistic",
        "Latest drift statistic per model key (psi_mean, psi_max, label_psi, …).",
        "model_key",
        "statistic",
    )
    null_quantile = gauge(
        "null_quantile",
        "The null distribution's quantile each statistic is compared against.",
        "model_key",
        "statistic",
    )
    window_rows = gauge("window_rows", "Rows in the drift window.", "model_key")
    decisions = counter(
        "checks_total", "Drift checks by result (drift, stable).", "model_key", "result"
    )
    baseline_state = gauge(
        "baseline_state",
        "1 for the state of each key's baseline (loaded, bootstrapping, unavailable).",
        "model_key",
        "state",
    )
    baseline_failures = counter(
        "baseline_load_failures_total",
        "Failed baseline loads (MLflow or store errors) per model key.",
        "model_key",
    )
    pending_rows = gauge(
        "pending_rows", "Rows buffered for a key whose baseline is unavailable.", "model_key"
    )
    skipped = counter(
        "skipped_rows_total",
        "Rows left out of a window, by reason (encoder, dimension, nonfinite, time, duplicate).",
        "model_key",
        "reason",
    )

    def __init__(self, metrics: LoopMetrics) -> None:
        super().__init__(metrics)
        self._labels: set[str] = set()  # keys shown so far

    def update(self, monitor: DriftMonitor, checked: set[str], pending: dict[str, int]) -> None:
        for key, state in monitor.keys.items():
            label = str(key)
            report = state.last_report
            if report is None:
                continue
            self.window_rows.labels(label).set(report.window_rows)
            for score in report.scores:
                self.statistic.labels(label, score.statistic).set(score.value)
                if score.null_quantile is not None:
                    self.null_quantile.labels(label, score.statistic).set(score.null_quantile)
            if label in checked:
                self.decisions.labels(label, "drift" if report.drifted else "stable").inc()
        states = {str(key): status.state for key, status in monitor.baselines.items()}
        self._labels |= states.keys() | pending.keys()
        for label in self._labels:  # a reloaded key (no state until fetched) shows zeros
            for name in BASELINE_STATES:
                self.baseline_state.labels(label, name).set(states.get(label) == name)
            self.pending_rows.labels(label).set(pending.get(label, 0))
        for key, failures in monitor.load_failures.items():
            self.catch_up(self.baseline_failures.labels(str(key)), failures)
        for (key, reason), n in monitor.skipped.items():
            if reason in SKIP_REASONS:
                self.catch_up(self.skipped.labels(str(key), reason), n)


class DriftMonitorService(ServiceBase[Event]):
    """Glue between the loop and `DriftMonitor`: buffering, reloads, seeks and metrics."""

    topics = TOPICS

    @classmethod
    def from_settings(cls, settings: DriftMonitorSettings) -> DriftMonitorService:
        """The service with its baseline sources: the champion's in MLflow, else the store."""
        limit_blas_threads(settings.blas_threads)  # numpy, scipy and scikit-learn are loaded
        # A baseline load runs inside a flush: MLflow's own retries (7, about two minutes
        # with a refused connection) would hold the loop; the monitor retries with its own
        # backoff.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        sources: list[BaselineSource] = []
        if settings.mlflow is not None:
            sources.append(MlflowBaselineSource(settings.mlflow.tracking_uri))
        if settings.store_url is not None:
            encoder = EncoderInfo(id=MODEL_ID, precision=settings.encoder_precision)
            sources.append(
                StoreBaselineSource(
                    settings.store_url,
                    settings,
                    encoder,
                    min_rows=settings.bootstrap_rows,  # a thin baseline calibrates badly
                )
            )
        return cls(settings, ChainedBaselineSource(*sources))

    def __init__(self, settings: DriftMonitorSettings, source: BaselineSource) -> None:
        self.settings = settings
        self.monitor = DriftMonitor(settings, source)
        self.metrics = LoopMetrics(settings.service_name)
        self.drift_metrics = DriftMetrics(self.metrics)
        # Rows not yet observed, per key: released only once `observe_key` succeeded.
        self._buffer: dict[ModelKey, list[InteractionEmbeddedEvent]] = {}
        # Decisions of keys a failed flush had already observed: published by the next one.
        self._ready: list[Event] = []
        self._lock = asyncio.Lock()  # a reassignment waits for the flush's worker thread
        self._baselines_ok = True
        self.restored_requests = 0

    def decode(self, record: Record) -> Event:
        return decode_event(record.value or b"", expected=ACCEPTED)

    async def handle(self, event: Event) -> list[Event]:
        if isinstance(event, InteractionEmbeddedEvent):
            self._buffer.setdefault(event.model_key, []).append(event)
            return []
        if event.payload.stage != "champion":
            return []  # a shadow or canary stage: the champion, and its baseline, stay
        # A new champion (or a rollback): its baseline replaces the old one.
        outputs = await self.flush()  # score what arrived before the change first
        self.monitor.reload(event.model_key)
        log.info("%s for %s: reloading its baseline", event.event_type, event.model_key)
        return list(outputs)

    async def flush(self) -> list[Event]:
        """Observe the buffered rows key by key; the decisions to publish.

        Raises what `observe_key` raised (the loop retries: same rows, and the keys done
        before are not observed twice), or `RetryableError` when more than
        `baseline_pending_max_rows` rows wait for one key's unavailable baseline."""
        async with self._lock:
            before = {str(k): s.last_report for k, s in self.monitor.keys.items()}
            try:
                if self._buffer:
                    await asyncio.to_thread(self._observe_buffered)
            finally:
                checked = {
                    str(k)
                    for k, s in self.monitor.keys.items()
                    if s.last_report is not None and s.last_report is not before.get(str(k))
                }
                self._update_metrics(checked)
            outputs, self._ready = self._ready, []
            return outputs

    def _observe_buffered(self) -> None:
        """In the worker thread: each key's rows, released once observed."""
        for key, rows in list(self._buffer.items()):
            try:
                self._ready += self.monitor.observe_key(key, rows)
            except BaselineUnavailable as exc:
                limit = self.settings.baseline_pending_max_rows
                if len(rows) > limit:
                    raise RetryableError(
                        f"{len(rows)} rows of {key} wait for its baseline (at most {limit} "
                        "are kept): giving up; a restart re-reads them from Kafka"
                    ) from exc
                continue  # they wait; the other keys go on
            del self._buffer[key]

    def _update_metrics(self, checked: set[str]) -> None:
        pending = {str(k): len(rows) for k, rows in self._buffer.items()}
        self.drift_metrics.update(self.monitor, checked, pending)
        self._baselines_ok = not self.monitor.unavailable()

    def ready_checks(self) -> Mapping[str, ReadyCheck]:
        return {"drift_baselines_available": self.baselines_available}

    def baselines_available(self) -> bool:
        """/readyz: no key waits for a baseline its source failed to load."""
        return self._baselines_ok

    async def on_start(self) -> None:
        """Before the loop consumes: restore cooldowns from our own training requests."""
        hours = max(self.settings.cooldown_hours, 1)
        since = datetime.now(UTC) - timedelta(hours=hours)
        self.restored_requests = await restore_history(self.settings.kafka, self.monitor, since)

    async def on_assigned(self, consumer: Consumer, assigned: set[TopicPartition]) -> None:
        """Rebuild the windows from Kafka by timestamp, so a restart changes no decision."""
        embedded = [tp for tp in assigned if tp.topic == topics.INTERACTIONS_EMBEDDED]
        if not embedded:
            return
        async with self._lock:
            self._buffer.clear()  # re-read below, like every row of the window
            self._ready.clear()  # recomputed by the replay (same decision ids)
            self.monitor.reset_windows()
        since = datetime.now(UTC) - timedelta(hours=self.settings.window_hours + 1)
        await seek_to_time(consumer, embedded, since)
        log.info(
            "rebuilding drift windows from %s (%d earlier training requests restored)",
            since.isoformat(),
            self.restored_requests,
        )


async def restore_history(kafka: KafkaSettings, monitor: DriftMonitor, since: datetime) -> int:
    """Read our own recent `training.requested` events: cooldowns and requested intents."""
    restored = 0
    history = events_since(
        kafka,
        topics.TRAINING_REQUESTED,
        since,
        client_id=f"{SERVICE}-history",
        expected=(TrainingRequestedEvent,),
    )
    async with contextlib.aclosing(history) as events:
        async for event in events:
            if event.producer == SERVICE:
                p = event.payload
                monitor.remember_request(event.model_key, p.as_of or event.occurred_at, p.new_label)
                restored += 1
    log.info(
        "restored %d earlier training requests of %s since %s",
        restored,
        SERVICE,
        since.isoformat(),
    )
    return restored


def limit_blas_threads(threads: int) -> None:
    """Cap the BLAS pools loaded so far (numpy's and scipy's OpenBLAS) for the whole
    process, the worker thread that runs `DriftMonitor.observe` included; 0: no cap."""
    if threads:
        threadpool_limits(limits=threads, user_api="blas")
