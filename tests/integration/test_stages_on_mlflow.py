"""A staged promotion on a real MLflow server, with real `TextClassifier` versions served by
the predictor: shadow (scored, never answered) → canary (a sticky share) → champion, each
step read back from the registry's aliases and tags; a rollback ends a stage and leaves
the champion. The promoter runs in-process with its clock passed in, so the stages' ends
are exact; `test_stages_on_kafka.py` runs the same with the clock and the broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mlflow import MlflowClient

from driftloop_common.contracts.events import (
    Event,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    PredictionEvent,
    RollbackRequested,
    RollbackRequestedEvent,
)
from driftloop_common.ml.encoder import TextEncoder
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag
from driftloop_predictor.loading import MlflowLoader
from driftloop_predictor.models import in_canary
from driftloop_predictor.service import PredictorService
from driftloop_predictor.settings import PredictorSettings
from driftloop_promoter.promotion import Promoter
from driftloop_promoter.rollout import RolloutOptions
from driftloop_promoter.targets import PredictorTarget
from tests.integration.test_predictor_on_mlflow import register_version

pytestmark = pytest.mark.integration

ROLLOUT = RolloutOptions(shadow_s=600, canary_s=600, canary_percent=30)
SESSIONS = [f"conversation-{i}" for i in range(40)]


def evaluated(key: ModelKey, version: int) -> ModelEvaluatedEvent:
    return ModelEvaluatedEvent(
        producer="test",
        model_key=key,
        payload=ModelEvaluated(
            registered_model=key.registered_model,
            version=version,
            passed=True,
            metrics={"confidence": 0.8, "challenger_accuracy": 0.9},
        ),
    )


def promoted(events: list[Event]) -> list[tuple[int, str]]:
    return [
        (e.payload.version, e.payload.stage) for e in events if isinstance(e, ModelPromotedEvent)
    ]


class Setup:
    def __init__(self, key: ModelKey, uri: str, predictor: PredictorService, http: Any) -> None:
        self.key, self.name = key, key.registered_model
        self.client = MlflowClient(uri)
        self.promoter = Promoter(
            uri, lambda _key: ["predictor"], lambda _n, _k: PredictorTarget(), rollout=ROLLOUT
        )
        self.predictor, self.http = predictor, http

    def alias(self, alias: str) -> str | None:
        version = registry.version_by_alias(self.client, self.name, alias)
        return None if version is None else version.version

    def tags(self, version: int) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, str(version)).tags)

    async def answers(self) -> dict[str, str]:
        """The version that answers each conversation (Bot Connector, one utterance each)."""
        seen = {}
        for session in SESSIONS:
            body = {"botSessionId": session, "inputMessage": {"text": "my card was stolen"}}
            answer = await self.http.post(f"/genesys/bot-connector/{self.name}", json=body)
            assert answer.status_code == 200 and answer.json()["botState"] == "Complete"
            seen[session] = answer.json()["parameters"]["model_version"]
        return seen

    async def tell_predictor(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ModelPromotedEvent | ModelRolledBackEvent):
                await self.predictor.handle(event)


@pytest.fixture
async def setup(mlflow_uri: str) -> AsyncIterator[Setup]:
    key = ModelKey.parse(f"intent/xs-{uuid.uuid4().hex[:6]}")
    encoder = TextEncoder().load()
    for _ in range(3):
        register_version(mlflow_uri, key.registered_model, encoder, champion=False)
    settings = PredictorSettings(  # type: ignore[call-arg]
        _env_file=None, serve=[key], mlflow=MlflowSettings(tracking_uri=mlflow_uri)
    )
    predictor = PredictorService(settings, MlflowLoader(settings.mlflow), LoopMetrics("p"))
    app = FastAPI()
    app.include_router(predictor.routes())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
        yield Setup(key, mlflow_uri, predictor, http)
    await predictor.models.aclose()


async def test_shadow_then_canary_then_champion_each_served_as_staged(setup: Setup) -> None:
    s, start = setup, datetime.now(UTC)
    first = await s.promoter.promote(evaluated(s.key, 1))
    assert promoted(first) == [(1, "champion")]  # nothing to compare with: no stages
    await s.tell_predictor(first)

    second = evaluated(s.key, 2)
    shadow = await s.promoter.promote(second)
    assert promoted(shadow) == [(2, "shadow")]
    assert (s.alias("champion"), s.alias("shadow")) == ("1", "2")
    again = await s.promoter.promote(second)  # a redelivery: the same event again
    assert [e.event_id for e in again] == [shadow[0].event_id]
    await s.tell_predictor(shadow)
    assert set((await s.answers()).values()) == {"1"}  # a shadow never answers
    await s.predictor.models.shadows_scored()
    events = [e for e in await s.predictor.flush() if isinstance(e, PredictionEvent)]
    scored = {(e.payload.version, e.payload.stage) for e in events}
    assert scored == {(1, "champion"), (2, "shadow")}

    assert await s.promoter.advance(start + timedelta(seconds=300)) == []  # not over yet
    canary = await s.promoter.advance(start + timedelta(seconds=700))
    assert promoted(canary) == [(2, "canary")]
    assert (s.alias("champion"), s.alias("shadow"), s.alias("canary")) == ("1", None, "2")
    assert s.tags(2)[Tag.STAGE_SHARE] == "30.0"
    await s.tell_predictor(canary)
    answers = await s.answers()
    assert answers == {c: "2" if in_canary(s.name, c, 30.0) else "1" for c in SESSIONS}
    assert answers == await s.answers()  # sticky: each conversation keeps its version
    assert {"1", "2"} == set(answers.values())

    live = await s.promoter.advance(start + timedelta(seconds=1400))
    assert promoted(live) == [(2, "champion")]
    assert (s.alias("champion"), s.alias("canary")) == ("2", None)
    assert s.tags(2)[Tag.STAGE] == "ended" and s.tags(1)[Tag.STATUS] == "inactive"
    await s.tell_predictor(live)
    assert set((await s.answers()).values()) == {"2"}
    assert s.predictor.models.staged(s.name) is None
    assert await s.promoter.advance(start + timedelta(days=1)) == []


async def test_a_rollback_of_a_staged_version_ends_its_stage_and_keeps_the_champion(
    setup: Setup,
) -> None:
    s = setup
    await s.tell_predictor(await s.promoter.promote(evaluated(s.key, 1)))
    await s.tell_predictor(await s.promoter.promote(evaluated(s.key, 2)))
    request = RollbackRequestedEvent(
        producer="rollback-watcher",
        model_key=s.key,
        payload=RollbackRequested(
            reason="shadow confidence fell", requested_by="t", from_version=2
        ),
    )
    ended = await s.promoter.rollback(request)
    [rolled] = [e for e in ended if isinstance(e, ModelRolledBackEvent)]
    assert (rolled.payload.from_version, rolled.payload.to_version) == (2, 1)
    assert rolled.payload.stage == "shadow"
    assert (s.alias("champion"), s.alias("shadow")) == ("1", None)
    assert s.tags(2)[Tag.STATUS] == "rolled_back"
    again = await s.promoter.rollback(request)  # a redelivery: the same events
    assert [e.event_id for e in again] == [e.event_id for e in ended]
    await s.tell_predictor(ended)
    assert s.predictor.models.staged(s.name) is None
    assert await s.promoter.advance(datetime.now(UTC) + timedelta(days=1)) == []
    # A rolled-back version is never staged again on its own; a newer one is.
    assert promoted(await s.promoter.promote(evaluated(s.key, 2))) == []
    assert promoted(await s.promoter.promote(evaluated(s.key, 3))) == [(3, "shadow")]
