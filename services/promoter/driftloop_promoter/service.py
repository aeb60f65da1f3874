"""The promoter service: a passed `model.evaluated` → its targets → `model.promoted`;
`rollback.requested` → the previous champion back on every target → `model.rolled_back`.
With stages configured, its flush moves staged versions on (shadow → canary → champion)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import ConfigError
from driftloop_common.contracts.events import (
    Event,
    ModelEvaluatedEvent,
    ModelKey,
    RollbackRequestedEvent,
    decode_event,
)
from driftloop_common.genesys import GenesysClient, GenesysMetrics
from driftloop_common.runtime.loop import DeadLetter, Record
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter
from driftloop_common.runtime.service import ServiceBase
from driftloop_promoter.genesys_nlu import NAME as GENESYS_NLU
from driftloop_promoter.genesys_nlu import GenesysNluTarget
from driftloop_promoter.model_config import NAME as MODEL_CONFIG
from driftloop_promoter.model_config import ModelConfigTarget
from driftloop_promoter.promotion import Promoter
from driftloop_promoter.settings import PromoterSettings
from driftloop_promoter.targets import PredictorTarget, Target, targets_for

Request = ModelEvaluatedEvent | RollbackRequestedEvent


class PromoterMetrics(MetricSet):
    outcomes = counter(
        "outcomes_total", "Outcomes by model key and event type.", "model_key", "outcome"
    )


class PromoterService(ServiceBase[Request]):
    topics = (topics.MODEL_EVALUATED, topics.ROLLBACK_REQUESTED)

    @classmethod
    def from_settings(cls, settings: PromoterSettings) -> PromoterService:
        metrics = LoopMetrics(settings.service_name)
        genesys_metrics = GenesysMetrics(metrics)  # one set: every target's client counts here

        def make(name: str, key: ModelKey) -> Target:
            return build_target(name, key, settings, genesys_metrics)

        promoter = Promoter(
            settings.mlflow.tracking_uri,
            lambda key: targets_for(key, settings.targets),
            make,
            registry_uri=settings.mlflow.registry_uri,
            rollout=settings.rollout,
        )
        return cls(promoter, metrics)

    def __init__(self, promoter: Promoter, metrics: LoopMetrics) -> None:
        self.promoter = promoter
        self.metrics = metrics
        self.counts = PromoterMetrics(metrics)
        self._next_check = time.monotonic()  # the stages' clocks are read from then on

    def decode(self, record: Record) -> Request:
        return decode_event(
            record.value or b"", expected=(ModelEvaluatedEvent, RollbackRequestedEvent)
        )

    async def handle(self, value: Request) -> Sequence[Event]:
        if isinstance(value, ModelEvaluatedEvent):
            events = await self.promoter.promote(value)
        else:
            events = await self.promoter.rollback(value)
        self._count(events)
        return events

    async def flush(self) -> Sequence[Event | DeadLetter]:
        """Staged versions whose stage is over move on (read from MLflow every `check_s`)."""
        if not self.promoter.rollout.staged or time.monotonic() < self._next_check:
            return []
        events = await self.promoter.advance()
        self._next_check = time.monotonic() + self.promoter.rollout.check_s  # after a success
        self._count(events)
        return events

    def flush_due_in(self) -> float | None:
        if not self.promoter.rollout.staged:
            return None
        return max(0.0, self._next_check - time.monotonic())

    def _count(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.event_type != "audit":
                self.counts.outcomes.labels(str(event.model_key), event.event_type).inc()


def build_target(
    name: str, key: ModelKey, settings: PromoterSettings, metrics: GenesysMetrics
) -> Target:
    """The target called `name` for `key`, from the settings (a Genesys target gets a client
    of its own for the promotion, closed with the target)."""
    if name == "predictor":
        return PredictorTarget()

    def client() -> GenesysClient:
        return GenesysClient(settings.genesys, settings.genesys_client, metrics=metrics)

    if name == GENESYS_NLU:
        domain = _configured(settings.genesys_domains, key, "DRIFTLOOP_GENESYS_DOMAINS")
        return GenesysNluTarget(client(), domain, settings.store_url, settings.genesys_nlu)
    if name == MODEL_CONFIG:
        model_id = _configured(settings.ml_models, key, "DRIFTLOOP_ML_MODELS")
        return ModelConfigTarget(client(), model_id, settings.store_url, settings.ml_upload)
    known = ", ".join(("predictor", GENESYS_NLU, MODEL_CONFIG))
    raise ConfigError(f"unknown deploy target {name!r} for {key} (known: {known})")


def _configured(table: dict[str, str], key: ModelKey, variable: str) -> str:
    for pattern in (str(key), key.model_type.value, "*"):
        if pattern in table:
            return table[pattern]
    raise ConfigError(f"{variable} names nothing for {key}")
