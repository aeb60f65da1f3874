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
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from driftloop_common.events import Event, TrainingFailedEvent, TrainingRequestedEvent
from driftloop_common.metrics import LoopMetrics

if TYPE_CHECKING:
    from driftloop_trainer.training import Trainer

log = logging.getLogger(__name__)


class TrainerMetrics:
    def __init__(self, metrics: LoopMetrics) -> None:
        r = metrics.registry
        self.trainings = Counter(
            "driftloop_trainer_trainings",
            "Trainings by model key and outcome (trained, failed, already_done, coalesced).",
            ["model_key", "outcome"],
            registry=r,
        )
        self.seconds = Histogram(
            "driftloop_trainer_training_seconds",
            "Wall time of one training, data loading to registration.",
            ["model_key"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )


class TrainerService:
    def __init__(self, trainer: Trainer, metrics: TrainerMetrics) -> None:
        self.trainer = trainer
        self.metrics = metrics

    async def handle(self, request: TrainingRequestedEvent) -> Sequence[Event]:
        key = str(request.model_key)
        done = await asyncio.to_thread(self.trainer.existing, request)
        if done is not None:
            log.info("request %s already produced a version; publishing it again", request.event_id)
            self.metrics.trainings.labels(key, "already_done").inc()
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
            self.metrics.trainings.labels(key, "coalesced").inc()
            return []
        with self.metrics.seconds.labels(key).time():
            result = await asyncio.to_thread(self.trainer.train, request)
        outcome = "failed" if isinstance(result, TrainingFailedEvent) else "trained"
        self.metrics.trainings.labels(key, outcome).inc()
        return [result]
