"""`python -m driftloop_drift_monitor` (or `driftloop service drift-monitor`).

Kafka wiring of `DriftMonitor`: embedded interactions are buffered and observed once per
poll (batched projection and binning); promotions and rollbacks reload the key's
baseline. Nothing is kept only in memory: on every partition assignment the window is
rebuilt by seeking `interactions.embedded` to `now - window` (`offsets_for_times`), and
cooldowns are restored from the `training.requested` history at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge
from threadpoolctl import threadpool_limits

from driftloop_common import topics
from driftloop_common.drift.detect import DetectorConfig
from driftloop_common.encoder import MODEL_ID
from driftloop_common.events import (
    EncoderInfo,
    Event,
    InteractionEmbeddedEvent,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.metrics import LoopMetrics
from driftloop_common.runtime import run_service
from driftloop_common.service import Record
from driftloop_common.settings import KafkaSettings, load_settings
from driftloop_drift_monitor.baselines import (
    ChainedBaselineSource,
    MlflowBaselineSource,
    StoreBaselineSource,
)
from driftloop_drift_monitor.monitor import SERVICE, BaselineSource, DriftMonitor, MonitorConfig
from driftloop_drift_monitor.settings import DriftMonitorSettings

log = logging.getLogger(__name__)
ACCEPTED = (InteractionEmbeddedEvent, ModelPromotedEvent, ModelRolledBackEvent)
TOPICS = (topics.INTERACTIONS_EMBEDDED, topics.MODEL_PROMOTED, topics.MODEL_ROLLED_BACK)


def monitor_config(settings: DriftMonitorSettings) -> MonitorConfig:
    return MonitorConfig(
        window=timedelta(hours=settings.window_hours),
        check_every_rows=settings.check_every_rows,
        cooldown=timedelta(hours=settings.cooldown_hours),
        new_intent_min_examples=settings.new_intent_min_examples,
        bootstrap_rows=settings.bootstrap_rows,
        bins=settings.bins,
        pca_variance=settings.pca_variance,
        max_components=settings.max_components,
        raw_dimensions=settings.raw_dimensions,
        detector=DetectorConfig(
            alpha=settings.alpha,
            detectors=settings.detectors,
            min_rows=settings.min_rows,
            min_labelled=settings.min_labelled,
        ),
    )


class DriftMetrics:
    def __init__(self, metrics: LoopMetrics) -> None:
        r = metrics.registry
        self.statistic = Gauge(
            "driftloop_drift_statistic",
            "Latest drift statistic per model key (psi_mean, psi_max, label_psi, …).",
            ["model_key", "statistic"],
            registry=r,
        )
        self.null_quantile = Gauge(
            "driftloop_drift_null_quantile",
            "The null distribution's quantile each statistic is compared against.",
            ["model_key", "statistic"],
            registry=r,
        )
        self.window_rows = Gauge(
            "driftloop_drift_window_rows", "Rows in the drift window.", ["model_key"], registry=r
        )
        self.decisions = Counter(
            "driftloop_drift_checks_total",
            "Drift checks by result (drift, stable).",
            ["model_key", "result"],
            registry=r,
        )

    def update(self, monitor: DriftMonitor, checked: set[str]) -> None:
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


class DriftMonitorService:
    """Glue between the loop and `DriftMonitor`: buffering, reloads, seeks and metrics."""

    def __init__(self, settings: DriftMonitorSettings, source: BaselineSource) -> None:
        self.settings = settings
        self.monitor = DriftMonitor(monitor_config(settings), source)
        self.metrics = LoopMetrics(settings.service_name)
        self.drift_metrics = DriftMetrics(self.metrics)
        self._buffer: list[InteractionEmbeddedEvent] = []
        self.restored_requests = 0

    def decode(self, record: Record) -> Event:
        return decode_event(record.value or b"", expected=ACCEPTED)

    async def handle(self, event: Event) -> list[Event]:
        if isinstance(event, InteractionEmbeddedEvent):
            self._buffer.append(event)
            return []
        # A new champion (or a rollback): its baseline replaces the old one.
        outputs = await self.flush()  # score what arrived before the change first
        self.monitor.reload(event.model_key)
        log.info("%s for %s: reloading its baseline", event.event_type, event.model_key)
        return list(outputs)

    async def flush(self) -> list[Event]:
        if not self._buffer:
            return []
        batch, self._buffer = self._buffer, []
        before = {str(k): s.last_report for k, s in self.monitor.keys.items()}
        outputs = await asyncio.to_thread(self.monitor.observe, batch)
        checked = {
            str(k)
            for k, s in self.monitor.keys.items()
            if s.last_report is not None and s.last_report is not before.get(str(k))
        }
        self.drift_metrics.update(self.monitor, checked)
        return outputs

    async def on_assigned(self, consumer: Any, assigned: set[TopicPartition]) -> None:
        """Rebuild the windows from Kafka by timestamp, so a restart changes no decision."""
        embedded = [tp for tp in assigned if tp.topic == topics.INTERACTIONS_EMBEDDED]
        if not embedded:
            return
        self._buffer.clear()
        self.monitor.reset_windows()
        since = datetime.now(UTC) - timedelta(hours=self.settings.window_hours + 1)
        found = await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in embedded}
        )
        for tp in embedded:
            position = found.get(tp)
            if position is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, position.offset)
        log.info(
            "rebuilding drift windows from %s (%d earlier training requests restored)",
            since.isoformat(),
            self.restored_requests,
        )


async def restore_history(kafka: KafkaSettings, monitor: DriftMonitor, since: datetime) -> int:
    """Read our own recent `training.requested` events: cooldowns and requested intents."""
    consumer = AIOKafkaConsumer(
        topics.TRAINING_REQUESTED,  # no group: every partition is assigned at start
        group_id=None,
        enable_auto_commit=False,
        **kafka.client_kwargs(),
    )
    await consumer.start()
    restored = 0
    try:
        tps = sorted(consumer.assignment())
        if not tps:
            return 0
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        for tp in tps:
            start = starts.get(tp)
            consumer.seek(tp, start.offset if start else ends[tp])

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    try:
                        event = decode_event(
                            record.value or b"", expected=(TrainingRequestedEvent,)
                        )
                    except Exception:
                        continue  # someone else's DLQ problem
                    if event.producer == SERVICE:
                        p = event.payload
                        monitor.remember_request(
                            event.model_key, p.as_of or event.occurred_at, p.new_label
                        )
                        restored += 1
    finally:
        await consumer.stop()
    return restored


def limit_blas_threads(threads: int) -> None:
    """Cap the BLAS pools loaded so far (numpy's and scipy's OpenBLAS) for the whole
    process, the worker thread that runs `DriftMonitor.observe` included; 0: no cap."""
    if threads:
        threadpool_limits(limits=threads, user_api="blas")


def main() -> None:
    settings = load_settings(DriftMonitorSettings)
    limit_blas_threads(settings.blas_threads)  # numpy, scipy and scikit-learn are loaded
    sources: list[BaselineSource] = []
    if settings.mlflow is not None:
        sources.append(MlflowBaselineSource(settings.mlflow.tracking_uri))
    if settings.store_url is not None:
        encoder = EncoderInfo(id=MODEL_ID, precision=settings.encoder_precision)
        sources.append(
            StoreBaselineSource(
                settings.store_url,
                monitor_config(settings),
                encoder,
                min_rows=settings.bootstrap_rows,  # a thin baseline calibrates badly
            )
        )
    service = DriftMonitorService(settings, ChainedBaselineSource(*sources))
    since = datetime.now(UTC) - timedelta(hours=max(settings.cooldown_hours, 1))
    restored = asyncio.run(restore_history(settings.kafka, service.monitor, since))
    service.restored_requests = restored
    run_service(
        settings,
        topics=TOPICS,
        decode=service.decode,
        handle=service.handle,
        metrics=service.metrics,
        flush=service.flush,
        on_assigned=service.on_assigned,
    )


if __name__ == "__main__":
    main()
