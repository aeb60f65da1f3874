"""The predictor service: the champion of each served model key over HTTP (`oip.py`), kept
current by `model.promoted` / `model.rolled_back` (each one reloads that key's champion
beside the live version and swaps it in), and a `prediction` event per prediction,
published by the loop's `flush` in batches (`predictions.py`). Genesys's Bot Connector
is served beside the inference protocol (`bot_connector.py`). A staged version (shadow or
canary, `models.py`) is loaded beside the champion; its predictions carry its stage.
The registry is read again every `recheck_s` too, so a lost event delays a reload only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from fastapi import APIRouter

from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import PermanentError, RetryableError
from driftloop_common.contracts.events import (
    Event,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    decode_event,
)
from driftloop_common.runtime.app import ReadyCheck
from driftloop_common.runtime.loop import DeadLetter, Record
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter, gauge, histogram
from driftloop_common.runtime.service import ServiceBase
from driftloop_predictor.batching import Scored
from driftloop_predictor.bot_connector import bot_connector_router
from driftloop_predictor.data_action import data_action_router
from driftloop_predictor.explain import explain_router
from driftloop_predictor.guards import Guards, OipLimits
from driftloop_predictor.models import Loaded, Loader, ServedModels
from driftloop_predictor.oip import oip_router
from driftloop_predictor.predictions import PendingPredictions
from driftloop_predictor.settings import PredictorSettings

log = logging.getLogger(__name__)

ModelEvent = ModelPromotedEvent | ModelRolledBackEvent
_ACCEPTED = (ModelPromotedEvent, ModelRolledBackEvent)


class PredictorMetrics(MetricSet):
    predictions = counter("predictions_total", "Predictions served, by model key.", "model_key")
    batch_size = histogram(
        "batch_size",
        "Texts per model call (micro-batching), by model key.",
        "model_key",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    )
    dropped = counter(
        "prediction_events_dropped_total",
        "Prediction events dropped because the queue to Kafka was full.",
    )
    serving = gauge("serving_version", "The version served now, by model key.", "model_key")
    staged = gauge(
        "staged_version",
        "The version in a stage, by model key and stage (shadow, canary).",
        "model_key",
        "stage",
    )
    shadow = counter(
        "shadow_predictions_total",
        "Shadow predictions, by agreement with the champion's answer (agree, disagree).",
        "model_key",
        "result",
    )


class PredictorService(ServiceBase[ModelEvent]):
    topics = (topics.MODEL_PROMOTED, topics.MODEL_ROLLED_BACK)

    @classmethod
    def from_settings(cls, settings: PredictorSettings) -> PredictorService:
        from driftloop_predictor.loading import MlflowLoader  # MLflow only where it is used

        return cls(settings, MlflowLoader(settings.mlflow), LoopMetrics(settings.service_name))

    def __init__(
        self,
        settings: PredictorSettings,
        loader: Loader,
        metrics: LoopMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.counts = PredictorMetrics(metrics)
        self.models = ServedModels(
            settings.serve,
            loader,
            settings,
            on_batch=lambda key, size: self.counts.batch_size.labels(str(key)).observe(size),
            on_shadow=self.record_shadow,
            abstain=[key.registered_model for key in settings.abstain],
            abstain_label=settings.abstain_label,
        )
        self.pending = PendingPredictions(settings.max_pending_predictions)
        self.clock = clock
        self._next_attempt = clock() + settings.reload_missing_s

    def decode(self, record: Record) -> ModelEvent:
        return cast(ModelEvent, decode_event(record.value or b"", expected=_ACCEPTED))

    async def handle(self, value: ModelEvent) -> Sequence[Event]:
        key = value.model_key
        if self.models.key_of(key.registered_model) is None:
            return []  # a model key this predictor does not serve
        if value.payload.registered_model != key.registered_model:
            raise PermanentError(
                f"{value.event_type} for {key} names the registered model "
                f"{value.payload.registered_model!r}, not {key.registered_model!r}",
                code="model_mismatch",
            )
        hint = (
            value.payload.version
            if isinstance(value, ModelPromotedEvent)
            else value.payload.to_version
        )
        await self._refresh(key, hint)
        return []

    async def on_start(self) -> None:
        for key in self.settings.serve:
            try:
                await self._refresh(key, None)
            except (RetryableError, PermanentError) as exc:  # retried by `flush`, or an event
                log.warning("could not load the champion of %s at start: %s", key, exc)

    async def _refresh(self, key: ModelKey, hint: int | None) -> None:
        loaded = await self.models.refresh(key, hint)
        if loaded is not None:
            self.counts.serving.labels(str(key)).set(loaded.version)
        staged = self.models.staged(key.registered_model)
        for stage in ("shadow", "canary"):
            shown = staged.version if staged is not None and staged.stage == stage else 0
            self.counts.staged.labels(str(key), stage).set(shown)

    def record(
        self,
        loaded: Loaded,
        labels: list[str],
        confidences: list[float],
        conversation_id: str | None,
    ) -> None:
        """After every answer: count it and queue its prediction events (no text)."""
        self.counts.predictions.labels(str(loaded.key)).inc(len(labels))
        dropped = self.pending.add(
            loaded.key, loaded.version, labels, confidences, conversation_id, loaded.stage
        )
        if dropped:
            self.counts.dropped.inc(dropped)

    def record_shadow(
        self, shadow: Loaded, champion: Loaded, scored: Scored, answer: Scored
    ) -> None:
        """A shadow's answers: their agreement with the champion's, and `prediction` events
        with stage `shadow` (the rollback-watcher can end the stage on them)."""
        key = str(shadow.key)
        agree = sum(a == b for a, b in zip(scored.labels, answer.labels, strict=True))
        self.counts.shadow.labels(key, "agree").inc(agree)
        self.counts.shadow.labels(key, "disagree").inc(len(scored.labels) - agree)
        dropped = self.pending.add(
            shadow.key, shadow.version, scored.labels, scored.confidences, None, "shadow"
        )
        if dropped:
            self.counts.dropped.inc(dropped)

    async def flush(self) -> Sequence[Event | DeadLetter]:
        await self._recheck()
        return self.pending.drain(self.settings.max_flush_predictions)

    async def _recheck(self) -> None:
        """Read the registry again without an event: every `reload_missing_s` while a
        champion is missing (MLflow down at start, no alias yet), else every `recheck_s`
        (an event lost to a crash, or an alias moved by hand)."""
        if self.clock() < self._next_attempt:
            return
        for key in self.settings.serve:
            try:
                await self._refresh(key, None)
            except (RetryableError, PermanentError) as exc:
                log.warning("could not read or load the versions of %s: %s", key, exc)
        wait = self.settings.recheck_s
        if not self.models.all_loaded():
            wait = self.settings.reload_missing_s
        self._next_attempt = self.clock() + wait

    def flush_due_in(self) -> float | None:
        if len(self.pending):
            return 0.0
        return max(0.0, self._next_attempt - self.clock())

    def ready_checks(self) -> Mapping[str, ReadyCheck]:
        return {"models_loaded": self.models.all_loaded}

    def routes(self) -> APIRouter | None:
        token = self.settings.api_token
        limits = OipLimits(
            max_body_bytes=self.settings.max_body_bytes,
            max_batch=self.settings.max_batch,
            api_token=token.get_secret_value() if token is not None else None,
        )
        guards = Guards(self.models, limits)
        router = APIRouter()
        router.include_router(oip_router(guards, self.record))
        router.include_router(bot_connector_router(guards, self.record))
        router.include_router(data_action_router(guards, self.record))
        router.include_router(explain_router(guards, self.settings.explain_texts))
        return router
