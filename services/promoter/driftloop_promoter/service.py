"""The promoter service: a passed `model.evaluated` → its targets → `model.promoted`;
`rollback.requested` → the previous champion back on every target → `model.rolled_back`."""

from __future__ import annotations

from collections.abc import Sequence

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Event,
    ModelEvaluatedEvent,
    ModelKey,
    RollbackRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.loop import Record
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.service import ServiceBase
from driftloop_promoter.promotion import Promoter
from driftloop_promoter.settings import PromoterSettings
from driftloop_promoter.targets import PredictorTarget, Target, targets_for

Request = ModelEvaluatedEvent | RollbackRequestedEvent


class PromoterMetrics:
    def __init__(self, metrics: LoopMetrics) -> None:
        self.outcomes = metrics.counter(
            "outcomes_total",
            "Promotions and rollbacks by model key and outcome (promoted, failed, …).",
            ["model_key", "outcome"],
        )


class PromoterService(ServiceBase[Request]):
    topics = (topics.MODEL_EVALUATED, topics.ROLLBACK_REQUESTED)

    @classmethod
    def from_settings(cls, settings: PromoterSettings) -> PromoterService:
        def make(name: str, key: ModelKey) -> Target:
            return build_target(name, key, settings)

        promoter = Promoter(
            settings.mlflow.tracking_uri,
            lambda key: targets_for(key, settings.targets),
            make,
            registry_uri=settings.mlflow.registry_uri,
        )
        return cls(promoter, LoopMetrics(settings.service_name))

    def __init__(self, promoter: Promoter, metrics: LoopMetrics) -> None:
        self.promoter = promoter
        self.metrics = metrics
        self.counts = PromoterMetrics(metrics)

    def decode(self, record: Record) -> Request:
        return decode_event(
            record.value or b"", expected=(ModelEvaluatedEvent, RollbackRequestedEvent)
        )

    async def handle(self, value: Request) -> Sequence[Event]:
        if isinstance(value, ModelEvaluatedEvent):
            events = await self.promoter.promote(value)
        else:
            events = await self.promoter.rollback(value)
        for event in events:
            if event.event_type != "audit":
                self.counts.outcomes.labels(str(value.model_key), event.event_type).inc()
        return events


def build_target(name: str, key: ModelKey, settings: PromoterSettings) -> Target:
    """The target called `name` for `key`, from the settings."""
    if name == "predictor":
        return PredictorTarget()
    from driftloop_common.contracts.errors import ConfigError

    raise ConfigError(f"unknown deploy target {name!r} for {key} (known: predictor)")
