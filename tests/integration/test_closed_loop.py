"""The closed loop, end to end, as processes on a real broker, a real MLflow server and the
Genesys simulator: v1 then v2 promoted (MLflow alias, predictor, a Genesys NLU domain
version each); real requests to the predictor that v2 answers with low confidence; the
predictor's own `prediction` events fill the rollback-watcher's window → `rollback.requested`
naming v2 → the promoter's `model.rolled_back` 2 → 1 → the alias on v1, the predictor
answering with v1, and Genesys serving v1's utterances again from a newly published domain
version rebuilt from v1."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import ModelRolledBackEvent, RollbackRequestedEvent
from tests.integration.helpers import (
    OFF_TOPIC,
    ON_TOPIC,
    closed_loop,
    events_until,
    utterances,
)

pytestmark = pytest.mark.integration
PREDICTIONS = 30  # the watcher's N in this test
SIMULATOR = {"DRIFTLOOP_SIM_TRAINING_DELAY_S": "1"}
PROMOTER = {
    "DRIFTLOOP_GENESYS_NLU__POLL_S": "0.3",
    "DRIFTLOOP_GENESYS_CLIENT__BACKOFF_BASE_S": "0.2",
    "DRIFTLOOP_GENESYS_CLIENT__BACKOFF_CAP_S": "1",
}


async def test_a_confidence_drop_on_live_traffic_rolls_back_every_target(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    async with closed_loop(
        kafka_bootstrap,
        mlflow_uri,
        tmp_path,
        min_predictions=PREDICTIONS,
        sim_env=SIMULATOR,
        promoter_env=PROMOTER,
    ) as loop:
        name = loop.name
        assert loop.champion() == "1"
        assert (await loop.infer([ON_TOPIC]))[0] == 1
        promoted = await loop.promote(2, confidence=0.9, accuracy=0.9)
        assert promoted.payload.previous_version == 1
        assert promoted.payload.targets == ["predictor", "genesys-nlu"]
        assert loop.champion() == "2"
        published = [v for v in await loop.domain_versions(utterances=True) if v["published"]]
        [first] = [v for v in published if v["description"].startswith(f"{name} v1 ")]
        [second] = [v for v in published if v["description"].startswith(f"{name} v2 ")]
        assert utterances(first) and utterances(first) != utterances(second)

        # The predictor's own traffic: v2 answers every off-topic text with low confidence;
        # its `prediction` events (published by its flush) are all the watcher reads.
        await loop.serving(2, OFF_TOPIC[0])  # one prediction of v2
        confidences: list[float] = []
        while 1 + len(confidences) < PREDICTIONS:
            version, scored = await loop.infer(OFF_TOPIC)
            assert version == 2
            confidences += scored
        assert sum(confidences) / len(confidences) < 0.9 * (1 - 0.10)  # the watcher's rule

        [request] = await events_until(
            kafka_bootstrap,
            topics.ROLLBACK_REQUESTED,
            lambda found: bool(found),
            keep=lambda e: e.model_key == loop.key,
            timeout_s=120,
            on_timeout=loop.logs,
        )
        assert isinstance(request, RollbackRequestedEvent)
        assert request.producer == "rollback-watcher"
        assert request.payload.from_version == 2
        assert "confidence:" in request.payload.reason
        assert f"{PREDICTIONS} predictions" in request.payload.reason

        [rolled] = await events_until(
            kafka_bootstrap,
            topics.MODEL_ROLLED_BACK,
            lambda found: bool(found),
            keep=lambda e: e.model_key == loop.key,
            timeout_s=180,
            on_timeout=loop.logs,
        )
        assert isinstance(rolled, ModelRolledBackEvent)
        assert (rolled.payload.from_version, rolled.payload.to_version) == (2, 1)
        assert rolled.correlation_id == request.correlation_id == promoted.correlation_id
        assert loop.champion() == "1"

        await loop.serving(1, ON_TOPIC)  # the predictor reloaded v1 on `model.rolled_back`

        published = [v for v in await loop.domain_versions(utterances=True) if v["published"]]
        newest = max(published, key=lambda v: v["datePublished"])
        assert newest["id"] not in (first["id"], second["id"])  # rebuilt, not re-published
        assert newest["description"].startswith(f"{name} v1 ")
        assert utterances(newest) == utterances(first)
