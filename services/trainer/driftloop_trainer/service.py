"""The trainer's Kafka handler: idempotence first, then coalescing, then one training.

One training per model key at a time: the loop handles one record at a time, and every
record of a key lands on one partition. Requests that arrived while a training of their
key ran are coalesced into at most one follow-up: a request made before the newest
training of its key *started* is already covered by that training (or by the follow-up
it caused) and is skipped. Both facts live in MLflow (the version's request tag, the
run's start time), so they survive restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Event,
    TrainingFailedEvent,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.loop import Record
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter, histogram
from driftloop_common.runtime.service import ServiceBase
from driftloop_trainer.settings import TrainerSettings
from driftloop_trainer.training import Trainer, TrainerConfig, request_time

log = logging.getLogger(__name__)


class TrainerMetrics(MetricSet):
    trainings = counter(
        "trainings_total",
        "Trainings by model key and outcome (trained, failed, already_done, coalesced).",
        "model_key",
        "outcome",
    )
    seconds = histogram(
        "training_seconds",
        "Wall time of one training, data loading to registration.",
        "model_key",
        buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600),
    )


class TrainerService(ServiceBase[TrainingRequestedEvent]):
    topics = (topics.TRAINING_REQUESTED,)

    @classmethod
    def from_settings(cls, settings: TrainerSettings) -> TrainerService:
        metrics = TrainerMetrics(LoopMetrics(settings.service_name))
        return cls(Trainer(settings), metrics)

    def __init__(self, trainer: Trainer, metrics: TrainerMetrics) -> None:
        self.trainer = trainer
        self.metrics = metrics.loop
        self.counts = metrics

    def decode(self, record: Record) -> TrainingRequestedEvent:
        return decoder(self.trainer.config)(record)

    async def handle(self, request: TrainingRequestedEvent) -> Sequence[Event]:
        key = str(request.model_key)
        done = await asyncio.to_thread(self.trainer.existing, request)
        if done is not None:
            log.info("request %s already produced a version; publishing it again", request.event_id)
            self.counts.trainings.labels(key, "already_done").inc()
            return [done]
        started = await asyncio.to_thread(self.trainer.last_started, request)
        if started is not None and request.occurred_at < started:
            log.info(
                "request %s (%s, %s) made before the training of %s that started %s: coalesced",
                request.event_id,
                request.payload.reason.value,
                request.occurred_at.isoformat(),
                key,
                started.isoformat(),
            )
            self.counts.trainings.labels(key, "coalesced").inc()
            return []
        with self.counts.seconds.labels(key).time():
            result = await asyncio.to_thread(self.trainer.train, request)
        outcome = "failed" if isinstance(result, TrainingFailedEvent) else "trained"
        self.counts.trainings.labels(key, outcome).inc()
        return [result]


def decoder(config: TrainerConfig) -> Callable[[Record], TrainingRequestedEvent]:
    """Decodes a `training.requested` and checks its times (year 1, year 9999: `InvalidAsOf`,
    to the DLQ) before anything reads MLflow or the store."""

    def decode(record: Record) -> TrainingRequestedEvent:
        request = decode_event(record.value or b"", expected=(TrainingRequestedEvent,))
        request_time(request, config)
        return request

    return decode
