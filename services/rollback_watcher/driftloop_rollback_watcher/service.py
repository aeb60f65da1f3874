"""The rollback-watcher service: `RollbackWatcher` (watch.py) wired to the loop.

Nothing is kept only in memory. At start-up (`on_start`, once logging and redaction are
set up) the promotions and rollbacks of the last `history_hours` are read back from Kafka
by timestamp, in event-time order, with our own earlier `rollback.requested` (not made
twice); on every partition assignment the windows are rebuilt by seeking `predictions` to
`now - window` (`offsets_for_times`), as the drift-monitor does. The loop commits offsets
as it handles records; a state event it delivers again (a new group reading from the
earliest offset, a redelivery) is recognised by its id and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Event,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    PredictionEvent,
    RollbackRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.kafka import TopicPartition, events_since
from driftloop_common.runtime.loop import Consumer, Record, seek_to_time
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter, gauge
from driftloop_common.runtime.service import ServiceBase
from driftloop_common.runtime.settings import KafkaSettings
from driftloop_rollback_watcher.settings import RollbackWatcherSettings
from driftloop_rollback_watcher.watch import (
    HOLD_REASONS,
    IGNORE_REASONS,
    SERVICE,
    SIGNALS,
    RollbackWatcher,
)

log = logging.getLogger(__name__)
ACCEPTED = (PredictionEvent, ModelPromotedEvent, ModelRolledBackEvent)
TOPICS = (topics.PREDICTIONS, topics.MODEL_PROMOTED, topics.MODEL_ROLLED_BACK)
# Predictions are stamped by their producer a moment before Kafka stamps them: seek a
# little further back than the window (older ones are left out by event time).
SEEK_SLACK = timedelta(minutes=1)


class WatchMetrics(MetricSet):
    expected_accuracy = gauge(
        "expected_accuracy",
        "Label-free accuracy estimate of the live version: the window's mean top-class "
        "probability (CBPE; assumes calibrated probabilities).",
        "model_key",
    )
    estimate_band = gauge(
        "expected_accuracy_band",
        "The estimate's bootstrap band (bound: low, high), computed once the estimate fell by "
        "more than the allowed drop.",
        "model_key",
        "bound",
    )
    window_confidence = gauge(
        "window_mean_confidence", "Mean confidence of the live version's window.", "model_key"
    )
    window_predictions = gauge(
        "window_predictions", "Predictions in the live version's window.", "model_key"
    )
    reference_confidence = gauge(
        "reference_confidence", "Mean confidence its promotion recorded.", "model_key"
    )
    reference_accuracy = gauge(
        "reference_accuracy", "Accuracy its promotion recorded.", "model_key"
    )
    live_version = gauge("live_version", "The version the watcher holds as live.", "model_key")
    ignored = counter(
        "ignored_predictions_total",
        "Predictions left out of a window, by reason (no_live_version, other_version, stale).",
        "model_key",
        "reason",
    )
    held = counter(
        "held_total",
        "Full windows that decided nothing, by reason (cooldown, no_reference).",
        "model_key",
        "reason",
    )
    requested = counter(
        "rollbacks_requested_total",
        "Rollbacks requested, by the signal that fired (confidence, estimate).",
        "model_key",
        "signal",
    )

    def update(self, watcher: RollbackWatcher, key: ModelKey) -> None:
        label = str(key)
        live = watcher.keys.get(key)
        if live is not None:
            self.live_version.labels(label).set(live.version)
            self.window_predictions.labels(label).set(len(live.window))
            ref = live.reference
            if ref is not None and ref.confidence is not None:
                self.reference_confidence.labels(label).set(ref.confidence)
            if ref is not None and ref.accuracy is not None:
                self.reference_accuracy.labels(label).set(ref.accuracy)
        check = watcher.last_checks.get(key)
        for shown in (self.expected_accuracy, self.window_confidence):
            if check is not None:
                shown.labels(label).set(check.mean)
            else:  # a new live version has no window yet: no estimate, not the old one's
                with contextlib.suppress(KeyError):
                    shown.remove(label)
        for bound, i in (("low", 0), ("high", 1)):
            if check is not None and check.band is not None:
                self.estimate_band.labels(label, bound).set(check.band[i])
            else:
                with contextlib.suppress(KeyError):
                    self.estimate_band.remove(label, bound)
        for reason in IGNORE_REASONS:
            self.catch_up(self.ignored.labels(label, reason), watcher.ignored.get((key, reason), 0))
        for reason in HOLD_REASONS:
            self.catch_up(self.held.labels(label, reason), watcher.held.get((key, reason), 0))
        for signal in SIGNALS:
            self.catch_up(
                self.requested.labels(label, signal), watcher.requested.get((key, signal), 0)
            )


class RollbackWatcherService(ServiceBase[Event]):
    """Glue between the loop and `RollbackWatcher`: history, seeks and metrics."""

    topics = TOPICS

    @classmethod
    def from_settings(cls, settings: RollbackWatcherSettings) -> RollbackWatcherService:
        return cls(settings)

    def __init__(self, settings: RollbackWatcherSettings) -> None:
        self.settings = settings
        self.watcher = RollbackWatcher(settings)
        self.metrics = LoopMetrics(settings.service_name)
        self.watch_metrics = WatchMetrics(self.metrics)
        self.restored = 0

    def decode(self, record: Record) -> Event:
        return decode_event(record.value or b"", expected=ACCEPTED)

    async def handle(self, event: Event) -> Sequence[Event]:
        outputs: list[Event] = []
        if isinstance(event, PredictionEvent):
            outputs = self.watcher.observe(event)
        elif isinstance(event, ModelPromotedEvent | ModelRolledBackEvent):
            self.watcher.apply(event)
        self.watch_metrics.update(self.watcher, event.model_key)
        return outputs

    async def on_start(self) -> None:
        """Before the loop consumes: what is live, and what we requested, from Kafka."""
        since = datetime.now(UTC) - self.settings.history
        self.restored = await restore_history(self.settings.kafka, self.watcher, since)
        for key in list(self.watcher.keys):
            self.watch_metrics.update(self.watcher, key)

    async def on_assigned(self, consumer: Consumer, assigned: set[TopicPartition]) -> None:
        """Rebuild the windows from Kafka by timestamp, so a restart changes no decision."""
        predictions = [tp for tp in assigned if tp.topic == topics.PREDICTIONS]
        if not predictions:
            return
        self.watcher.reset_windows()
        since = datetime.now(UTC) - self.settings.window - SEEK_SLACK
        await seek_to_time(consumer, predictions, since)
        log.info(
            "rebuilding confidence windows from %s (%d state events restored)",
            since.isoformat(),
            self.restored,
        )


async def restore_history(kafka: KafkaSettings, watcher: RollbackWatcher, since: datetime) -> int:
    """Apply the promotions and rollbacks since `since` in event-time order, and remember
    our own rollback requests; the number of state events applied."""
    changes: list[ModelPromotedEvent | ModelRolledBackEvent] = []
    expected = (ModelPromotedEvent, ModelRolledBackEvent, RollbackRequestedEvent)
    for topic in (topics.MODEL_PROMOTED, topics.MODEL_ROLLED_BACK, topics.ROLLBACK_REQUESTED):
        history = events_since(
            kafka, topic, since, client_id=f"{SERVICE}-history", expected=expected
        )
        async with contextlib.aclosing(history) as events:
            async for event in events:
                if isinstance(event, RollbackRequestedEvent):
                    if event.producer == SERVICE:
                        watcher.remember_request(event)
                else:
                    changes.append(event)
    changes.sort(key=lambda e: e.occurred_at)  # stable: a partition's order breaks ties
    for event in changes:
        watcher.apply(event)
    log.info("restored %d promotions and rollbacks since %s", len(changes), since.isoformat())
    return len(changes)
