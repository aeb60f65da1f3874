"""The rollback-watcher and the promoter as processes on a real broker and a real MLflow
server: v2 is promoted over v1, its predictions' confidence falls far below what its
evaluation measured → `rollback.requested` from the watcher → the promoter takes v2 back:
`model.rolled_back` (2 → 1) and the alias `champion` on v1 again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    ModelRolledBackEvent,
    Prediction,
    PredictionEvent,
    RollbackRequestedEvent,
)
from driftloop_common.runtime.metrics import metric_prefix
from driftloop_common.storage import registry
from tests.integration.helpers import (
    ServiceProcess,
    events_until,
    hang_guard,
    make_topics,
    produce,
    register_versions,
)

pytestmark = pytest.mark.integration
PREDICTIONS = 30  # the watcher's N in this test


async def test_a_confidence_drop_of_the_new_champion_rolls_it_back(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    key = ModelKey.parse(f"intent/en-{uuid.uuid4().hex[:6]}")
    name = key.registered_model
    client = MlflowClient(mlflow_uri)
    register_versions(client, name, 2)
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    watcher_name = f"rollback-watcher-{uuid.uuid4().hex[:6]}"  # a fresh consumer group
    common = {"DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap}
    promoter = ServiceProcess(
        "driftloop_promoter",
        {
            **common,
            "DRIFTLOOP_MLFLOW__TRACKING_URI": mlflow_uri,
            "DRIFTLOOP_SERVICE_NAME": f"promoter-{uuid.uuid4().hex[:6]}",
            "DRIFTLOOP_AUTO_OFFSET_RESET": "latest",
            "DRIFTLOOP_STORE_URL": str(tmp_path / "store"),
        },
        tmp_path / "promoter.log",
    )
    watcher = ServiceProcess(
        "driftloop_rollback_watcher",
        {
            **common,
            "DRIFTLOOP_SERVICE_NAME": watcher_name,
            "DRIFTLOOP_MIN_PREDICTIONS": str(PREDICTIONS),
        },
        tmp_path / "watcher.log",
    )

    def logs() -> str:
        return f"--- promoter\n{promoter.log_tail()}\n--- watcher\n{watcher.log_tail()}"

    await promoter.start()
    await watcher.start()
    await promoter.assigned()
    await watcher.assigned()
    try:
        for version in (1, 2):
            evaluated = ModelEvaluatedEvent(
                producer="test",
                model_key=key,
                payload=ModelEvaluated(
                    registered_model=name,
                    version=version,
                    passed=True,
                    metrics={"confidence": 0.9, "challenger_accuracy": 0.88},
                ),
            )
            await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated])
            await events_until(
                kafka_bootstrap,
                topics.MODEL_PROMOTED,
                lambda found, v=version: any(e.payload.version == v for e in found),
                keep=lambda e: e.model_key == key,
                timeout_s=120,
                on_timeout=logs,
            )
        live = registry.version_by_alias(client, name, registry.CHAMPION)
        assert live is not None and live.version == "2"

        now = datetime.now(UTC)
        stragglers = [prediction(key, 1, 0.99, now) for _ in range(5)]  # v1's: ignored
        low = [prediction(key, 2, 0.4, now + timedelta(milliseconds=i)) for i in range(PREDICTIONS)]
        await produce(kafka_bootstrap, topics.PREDICTIONS, [*stragglers, *low])

        [request] = await events_until(
            kafka_bootstrap,
            topics.ROLLBACK_REQUESTED,
            lambda found: bool(found),
            keep=lambda e: e.model_key == key,
            timeout_s=120,
            on_timeout=logs,
        )
        assert isinstance(request, RollbackRequestedEvent)
        assert request.payload.requested_by == "rollback-watcher"
        assert "confidence:" in request.payload.reason and "estimate:" in request.payload.reason
        assert f"{PREDICTIONS} predictions" in request.payload.reason

        [rolled] = await events_until(
            kafka_bootstrap,
            topics.MODEL_ROLLED_BACK,
            lambda found: bool(found),
            keep=lambda e: e.model_key == key,
            timeout_s=120,
            on_timeout=logs,
        )
        assert isinstance(rolled, ModelRolledBackEvent)
        assert (rolled.payload.from_version, rolled.payload.to_version) == (2, 1)
        live = registry.version_by_alias(client, name, registry.CHAMPION)
        assert live is not None and live.version == "1"

        prefix = metric_prefix(watcher_name)
        ignored = f'{prefix}_ignored_predictions_total{{model_key="{key}",reason="other_version"}}'
        async with httpx.AsyncClient(timeout=5) as http:

            async def metrics() -> str:
                return (await http.get(watcher.url("/metrics"))).text

            async with hang_guard(60, logs):  # the watcher reads `model.rolled_back` too
                while f'{prefix}_live_version{{model_key="{key}"}} 1.0' not in await metrics():
                    await asyncio.sleep(0.3)
            assert f"{ignored} 5.0" in await metrics()
    finally:
        await watcher.stop()
        await promoter.stop()


def prediction(key: ModelKey, version: int, confidence: float, at: datetime) -> PredictionEvent:
    return PredictionEvent(
        producer="predictor",
        model_key=key,
        occurred_at=at,
        payload=Prediction(version=version, label="billing", confidence=confidence, served_by="t"),
    )
