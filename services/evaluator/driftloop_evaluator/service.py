"""The evaluator service: each `model.trained` → `Evaluator.evaluate` → `model.evaluated`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import Event, ModelTrainedEvent, decode_event
from driftloop_common.runtime.loop import Record
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter
from driftloop_common.runtime.service import ServiceBase
from driftloop_evaluator.evaluation import Evaluator
from driftloop_evaluator.settings import EvaluatorSettings


def decode(record: Record) -> ModelTrainedEvent:
    return decode_event(record.value or b"", expected=(ModelTrainedEvent,))


class EvaluatorMetrics(MetricSet):
    verdicts = counter(
        "verdicts_total",
        "Evaluations by model key and verdict (passed / failed).",
        "model_key",
        "verdict",
    )


class EvaluatorService(ServiceBase[ModelTrainedEvent]):
    topics = (topics.MODEL_TRAINED,)

    @classmethod
    def from_settings(cls, settings: EvaluatorSettings) -> EvaluatorService:
        return cls(Evaluator(settings), LoopMetrics(settings.service_name))

    def __init__(self, evaluator: Evaluator, metrics: LoopMetrics) -> None:
        self.evaluator = evaluator
        self.metrics = metrics
        self.counts = EvaluatorMetrics(metrics)

    def decode(self, record: Record) -> ModelTrainedEvent:
        return decode(record)

    async def handle(self, value: ModelTrainedEvent) -> Sequence[Event]:
        result = await asyncio.to_thread(self.evaluator.evaluate, value)
        verdict = "passed" if result.payload.passed else "failed"
        self.counts.verdicts.labels(str(value.model_key), verdict).inc()
        return [result]
