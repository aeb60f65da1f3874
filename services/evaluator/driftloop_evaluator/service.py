"""The evaluator service: each `model.trained` → `Evaluator.evaluate` → `model.evaluated`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import Counter

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import Event, ModelTrainedEvent, decode_event
from driftloop_common.runtime.loop import Record
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.service import ServiceBase
from driftloop_evaluator.evaluation import Evaluator, EvaluatorConfig
from driftloop_evaluator.rules import Rules
from driftloop_evaluator.settings import EvaluatorSettings


def evaluator_config(settings: EvaluatorSettings) -> EvaluatorConfig:
    return EvaluatorConfig(
        tracking_uri=settings.mlflow.tracking_uri,
        registry_uri=settings.mlflow.registry_uri,
        store_url=settings.store_url,
        rules=Rules(
            f1_delta=settings.f1_delta,
            f1_floor=settings.f1_floor,
            max_class_drop=settings.max_class_drop,
            min_agreement=settings.min_agreement,
            rmse_improvement=settings.rmse_improvement,
            r2_floor=settings.r2_floor,
        ),
        shadow_hours=settings.shadow_hours,
        shadow_max_rows=settings.shadow_max_rows,
        min_test_rows=settings.min_test_rows,
    )


def decode(record: Record) -> ModelTrainedEvent:
    return decode_event(record.value or b"", expected=(ModelTrainedEvent,))


class EvaluatorMetrics:
    def __init__(self, metrics: LoopMetrics) -> None:
        self.verdicts = Counter(
            "driftloop_evaluator_verdicts",
            "Evaluations by model key and verdict (passed / failed).",
            ["model_key", "verdict"],
            registry=metrics.registry,
        )


class EvaluatorService(ServiceBase[ModelTrainedEvent]):
    topics = (topics.MODEL_TRAINED,)

    @classmethod
    def from_settings(cls, settings: EvaluatorSettings) -> EvaluatorService:
        return cls(Evaluator(evaluator_config(settings)), LoopMetrics(settings.service_name))

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
