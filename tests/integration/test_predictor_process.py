"""The predictor as its own process over real HTTP, on a real broker and MLflow server:
the token (401) and body limit (413) at the socket, a steady load through a promotion
(every request answered, by the old version or the new), and the `prediction` events it
publishes to Kafka. Latencies are not asserted here: `bench/bench_predictor.py` measures
them."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    ModelKey,
    ModelPromoted,
    ModelPromotedEvent,
    PredictionEvent,
)
from driftloop_common.ml.encoder import TextEncoder
from driftloop_common.storage import registry
from tests.integration.helpers import ServiceProcess, events_until, hang_guard, make_topics, produce
from tests.integration.test_predictor_on_mlflow import register_version

pytestmark = pytest.mark.integration
TOKEN = "process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def body(texts: list[str], conversation_id: str) -> dict:
    return {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        "parameters": {"conversation_id": conversation_id},
    }


async def test_the_predictor_process_guards_its_socket_and_serves_through_a_promotion(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    key = ModelKey.parse(f"intent/pp-{uuid.uuid4().hex[:6]}")
    name = key.registered_model
    encoder = TextEncoder().load()
    register_version(mlflow_uri, name, encoder)  # v1, champion
    register_version(mlflow_uri, name, encoder, champion=False)  # v2, waiting
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    predictor = ServiceProcess(
        "driftloop_predictor",
        {
            "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DRIFTLOOP_MLFLOW__TRACKING_URI": mlflow_uri,
            "DRIFTLOOP_SERVICE_NAME": f"predictor-{uuid.uuid4().hex[:6]}",
            "DRIFTLOOP_AUTO_OFFSET_RESET": "latest",
            "DRIFTLOOP_SERVE": json.dumps([str(key)]),
            "DRIFTLOOP_API_TOKEN": TOKEN,
            "DRIFTLOOP_MAX_BODY_BYTES": "4096",
        },
        tmp_path / "predictor.log",
    )
    await predictor.start()  # ready: v1 is loaded
    await predictor.assigned()
    url = predictor.url(f"/v2/models/{name}/infer")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            refused = await http.post(url, json=body(["hello"], "c-0"))
            assert refused.status_code == 401 and "token" in refused.json()["error"]
            assert refused.headers["www-authenticate"] == "Bearer"
            too_big = await http.post(url, json=body(["x" * 5000], "c-0"), headers=AUTH)
            assert too_big.status_code == 413 and "4096" in too_big.json()["error"]
            assert (await http.get(predictor.url("/docs"))).status_code == 404  # no /docs

            answered: list[tuple[int, str]] = []
            promoted = asyncio.Event()

            async def client(i: int) -> None:
                # Each client keeps asking until the promotion is in and v2 has answered it.
                while True:
                    texts = ["someone stole my card", "please give me my money back"]
                    answer = await http.post(url, json=body(texts, f"c-{i}"), headers=AUTH)
                    answered.append((answer.status_code, answer.json().get("model_version")))
                    if promoted.is_set() and answered[-1][1] == "2":
                        return

            load = [asyncio.create_task(client(i)) for i in range(4)]
            while len(answered) < 20:  # a steady load before the promotion
                await asyncio.sleep(0.05)
            MlflowClient(mlflow_uri).set_registered_model_alias(name, registry.CHAMPION, "2")
            event = ModelPromotedEvent(
                producer="test",
                model_key=key,
                payload=ModelPromoted(registered_model=name, version=2, targets=["predictor"]),
            )
            await produce(kafka_bootstrap, topics.MODEL_PROMOTED, [event])
            promoted.set()
            async with hang_guard(180, predictor.log_tail):
                await asyncio.gather(*load)
        statuses = {status for status, _ in answered}
        versions = [version for _, version in answered]
        assert statuses == {200}, f"not every request was answered: {statuses}"
        assert set(versions) == {"1", "2"} and versions[-1] == "2"
        first_v2 = versions.index("2")
        assert "1" not in versions[first_v2 + 8 :]  # once swapped, v1 only for requests in flight

        events = await events_until(
            kafka_bootstrap,
            topics.PREDICTIONS,
            lambda found: any(e.payload.version == 2 for e in found),
            keep=lambda e: e.model_key == key,
            timeout_s=120,
            on_timeout=predictor.log_tail,
        )
        assert all(isinstance(e, PredictionEvent) for e in events)
        assert {e.payload.stage for e in events} == {"champion"}
        assert {e.payload.label for e in events} <= {"lost_card", "refund"}
        assert all(
            e.payload.conversation_id and e.payload.conversation_id.startswith("c-") for e in events
        )
        assert b"stole" not in b"".join(e.to_bytes() for e in events)  # no text in events
    finally:
        await predictor.stop()
