"""The predictor on a real MLflow server with a real `TextClassifier` version: the champion
loaded at start through `models:/…`, answered over the Open Inference Protocol with the
real MiniLM encoder, and a promotion swapped in while requests keep succeeding.

The head is a two-class nearest-prototype head (no training): what matters here is the
loading path (alias → `models:/name/version` → `unwrap_python_model` → `predict`)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from driftloop_common.contracts.events import ModelKey, ModelPromoted, ModelPromotedEvent
from driftloop_common.ml.encoder import TextEncoder
from driftloop_common.ml.modeling.pyfunc import TextClassifier
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_common.storage import registry
from driftloop_predictor.loading import MlflowLoader
from driftloop_predictor.service import PredictorService
from driftloop_predictor.settings import PredictorSettings

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
PROTOTYPES = {"refund": "I want my money back", "lost_card": "my card was stolen"}


class PrototypeHead:
    """Softmax over cosine similarity to one embedded example per label."""

    def __init__(self, labels: list[str], centroids: np.ndarray) -> None:
        self.labels = labels
        self.centroids = centroids

    def predict_proba(self, examples: Any) -> np.ndarray:
        logits = np.asarray(examples.embeddings) @ self.centroids.T * 20.0
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def register_version(uri: str, name: str, encoder: TextEncoder, *, champion: bool = True) -> int:
    labels = list(PROTOTYPES)
    head = PrototypeHead(labels, encoder.encode(list(PROTOTYPES.values())))
    mlflow.set_tracking_uri(uri)
    client = registry.client(uri)
    experiment = registry.ensure_experiment(client, name)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TextClassifier(head, encoder.info),
            pip_requirements=["mlflow"],  # no inference: it would load the model again
        )
        version = mlflow.register_model(info.model_uri, name)
    if champion:
        client.set_registered_model_alias(name, registry.CHAMPION, version.version)
    return int(version.version)


async def test_the_champion_is_served_and_a_promotion_swaps_it_live(mlflow_uri: str) -> None:
    key = ModelKey.parse(f"intent/xp-{uuid.uuid4().hex[:6]}")
    name = key.registered_model
    encoder = TextEncoder().load()
    assert register_version(mlflow_uri, name, encoder) == 1

    settings = PredictorSettings(  # type: ignore[call-arg]
        _env_file=None,
        serve=[key],
        mlflow=MlflowSettings(tracking_uri=mlflow_uri),
        api_token=SecretStr(TOKEN),
    )
    service = PredictorService(settings, MlflowLoader(settings.mlflow), LoopMetrics("predictor"))
    await service.on_start()
    assert service.ready_checks()["models_loaded"]()
    app = FastAPI()
    routes = service.routes()
    assert routes is not None
    app.include_router(routes)
    body = {
        "inputs": [
            {
                "name": "text",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["please give me my money back", "someone stole my card"],
            }
        ]
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
        first = await client.post(f"/v2/models/{name}/infer", json=body, headers=headers)
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["model_version"] == "1"
        assert answer["outputs"][0]["data"] == ["refund", "lost_card"]
        assert all(0.5 < c <= 1.0 for c in answer["outputs"][1]["data"])

        assert register_version(mlflow_uri, name, encoder) == 2
        event = ModelPromotedEvent(
            producer="promoter",
            model_key=key,
            payload=ModelPromoted(registered_model=name, version=2, targets=["predictor"]),
        )
        statuses: list[int] = []
        versions: set[str] = set()
        reloading = asyncio.create_task(service.handle(event))
        while not reloading.done():
            response = await client.post(f"/v2/models/{name}/infer", json=body, headers=headers)
            statuses.append(response.status_code)
            versions.add(response.json()["model_version"])
            await asyncio.sleep(0.01)
        await reloading
        after = await client.post(f"/v2/models/{name}/infer", json=body, headers=headers)
    await service.models.aclose()
    assert statuses and set(statuses) == {200}
    assert versions <= {"1", "2"}
    assert after.json()["model_version"] == "2"
    assert after.json()["outputs"][0]["data"] == ["refund", "lost_card"]
    events = await service.flush()
    assert len(events) == 2 * (len(statuses) + 2)
