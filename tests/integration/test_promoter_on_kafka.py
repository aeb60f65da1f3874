"""The promoter as a process on a real broker and a real MLflow server: a passed evaluation
ends with a champion and `model.promoted`; `driftloop publish rollback` takes it back."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Event,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
)
from driftloop_common.storage import registry
from tests.integration.helpers import (
    ServiceProcess,
    events_until,
    make_topics,
    produce,
    register_versions,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def two_versions_and_a_promoter(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path, **env: str
) -> tuple[ModelKey, str, MlflowClient, ServiceProcess]:
    """A fresh model key with two registered versions, and a promoter process (not started)
    for it, with `env` on top of the common settings."""
    key = ModelKey.parse(f"intent/en-{uuid.uuid4().hex[:6]}")
    client = MlflowClient(mlflow_uri)
    register_versions(client, key.registered_model, 2)
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    promoter = ServiceProcess(
        "driftloop_promoter",
        {
            "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DRIFTLOOP_MLFLOW__TRACKING_URI": mlflow_uri,
            "DRIFTLOOP_SERVICE_NAME": f"promoter-{uuid.uuid4().hex[:6]}",
            "DRIFTLOOP_AUTO_OFFSET_RESET": "latest",
            "DRIFTLOOP_STORE_URL": str(tmp_path / "store"),
            **env,
        },
        tmp_path / "promoter.log",
    )
    return key, key.registered_model, client, promoter


async def test_a_passed_evaluation_goes_live_and_a_rollback_takes_it_back(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    key, name, client, promoter = await two_versions_and_a_promoter(
        kafka_bootstrap, mlflow_uri, tmp_path
    )
    await promoter.start()
    await promoter.assigned()
    try:
        for version in (1, 2):
            evaluated = ModelEvaluatedEvent(
                producer="test",
                model_key=key,
                payload=ModelEvaluated(registered_model=name, version=version, passed=True),
            )
            await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated])
            promoted = await events_until(
                kafka_bootstrap,
                topics.MODEL_PROMOTED,
                lambda found, v=version: any(e.payload.version == v for e in found),
                keep=lambda e: e.model_key == key,
                timeout_s=120,
                on_timeout=promoter.log_tail,
            )
            assert isinstance(promoted[-1], ModelPromotedEvent)
        assert promoted[-1].payload.previous_version == 1
        live = registry.version_by_alias(client, name, registry.CHAMPION)
        assert live is not None and live.version == "2"

        cli = [sys.executable, "-m", "driftloop_cli", "publish", "rollback", "-m", "intent"]
        published = subprocess.run(
            [*cli, "-l", key.language, "-r", "confidence fell", "--bootstrap", kafka_bootstrap],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert published.returncode == 0, published.stderr[-2000:]
        [rolled] = await events_until(
            kafka_bootstrap,
            topics.MODEL_ROLLED_BACK,
            lambda found: bool(found),
            keep=lambda e: e.model_key == key,
            timeout_s=120,
            on_timeout=promoter.log_tail,
        )
        assert isinstance(rolled, ModelRolledBackEvent)
        assert (rolled.payload.from_version, rolled.payload.to_version) == (2, 1)
        live = registry.version_by_alias(client, name, registry.CHAMPION)
        assert live is not None and live.version == "1"
    finally:
        await promoter.stop()


async def test_a_staged_promotion_moves_on_by_the_clock_and_survives_a_kill(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    """shadow 1 s → canary 1 s → champion, published by the promoter's flush; killed during
    the canary, the restarted promoter finishes it from the version's tags."""
    key, name, client, promoter = await two_versions_and_a_promoter(
        kafka_bootstrap,
        mlflow_uri,
        tmp_path,
        DRIFTLOOP_ROLLOUT__SHADOW_S="1",
        DRIFTLOOP_ROLLOUT__CANARY_S="1",
        DRIFTLOOP_ROLLOUT__CANARY_PERCENT="20",
        DRIFTLOOP_ROLLOUT__CHECK_S="0.2",
    )
    await promoter.start()
    await promoter.assigned()

    def stages(found: list[Event]) -> list[tuple[int, str]]:
        return [(e.payload.version, e.payload.stage) for e in found]  # type: ignore[attr-defined]

    def of_this_key(event: Event) -> bool:
        return event.model_key == key

    try:
        for version in (1, 2):
            evaluated = ModelEvaluatedEvent(
                producer="test",
                model_key=key,
                payload=ModelEvaluated(registered_model=name, version=version, passed=True),
            )
            await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated])
        await events_until(
            kafka_bootstrap,
            topics.MODEL_PROMOTED,
            lambda found: (2, "canary") in stages(found),
            keep=of_this_key,
            timeout_s=120,
            on_timeout=promoter.log_tail,
        )
        await promoter.stop(signal.SIGKILL)
        await promoter.start()
        found = await events_until(
            kafka_bootstrap,
            topics.MODEL_PROMOTED,
            lambda found: (2, "champion") in stages(found),
            keep=of_this_key,
            timeout_s=120,
            on_timeout=promoter.log_tail,
        )
        by_id = {e.event_id: (e.payload.version, e.payload.stage) for e in found}  # a resend: once
        assert list(by_id.values()) == [
            (1, "champion"),
            (2, "shadow"),
            (2, "canary"),
            (2, "champion"),
        ]
        canary = next(e for e in found if e.payload.stage == "canary")
        assert canary.payload.share_percent == 20.0 and canary.payload.targets == ["predictor"]
        live = registry.version_by_alias(client, name, registry.CHAMPION)
        assert live is not None and live.version == "2"
        assert registry.version_by_alias(client, name, "canary") is None
        assert registry.version_by_alias(client, name, "shadow") is None
    finally:
        await promoter.stop()
