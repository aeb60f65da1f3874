"""The predictor with a fake model (no MLflow, no Kafka): the Open Inference Protocol's
requests and answers, its limits and token, micro-batching, and a hot reload under load."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    ModelPromoted,
    ModelPromotedEvent,
    ModelRolledBack,
    ModelRolledBackEvent,
    PredictionEvent,
)
from driftloop_common.runtime.app import create_app
from driftloop_common.runtime.loop import LoopState
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_predictor.models import StagedVersion
from driftloop_predictor.predictions import PendingPredictions
from driftloop_predictor.service import PredictorService
from driftloop_predictor.settings import PredictorSettings

NAME = "intent-en-us"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeModel:
    """Labels each text `v<version>:<text upper-cased>`; counts its calls."""

    def __init__(self, version: int, delay_s: float = 0.0) -> None:
        self.version = version
        self.delay_s = delay_s
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def predict(self, context: Any, texts: list[str]) -> pd.DataFrame:
        with self._lock:
            self.sizes.append(len(texts))
        time.sleep(self.delay_s)
        return pd.DataFrame(
            {
                "label": [f"v{self.version}:{t.upper()}" for t in texts],
                "confidence": [0.75] * len(texts),
            }
        )


class FakeLoader:
    def __init__(self, champion: int | None = 1, delay_s: float = 0.0, load_s: float = 0.0) -> None:
        self.champions = {NAME: champion} if champion is not None else {}
        self.delay_s = delay_s
        self.load_s = load_s
        self.models: dict[int, FakeModel] = {}
        self.loads: list[int] = []
        self.stages: dict[str, StagedVersion] = {}

    def champion(self, name: str) -> int | None:
        return self.champions.get(name)

    def staged(self, name: str) -> StagedVersion | None:
        return self.stages.get(name)

    def load(self, name: str, version: int) -> FakeModel:
        time.sleep(self.load_s)
        self.loads.append(version)
        return self.models.setdefault(version, FakeModel(version, self.delay_s))


def settings(**overrides: Any) -> PredictorSettings:
    values: dict[str, Any] = {
        "api_token": SecretStr(TOKEN),
        "max_body_bytes": 4096,
        "max_batch": 8,
        "batch_wait_ms": 5.0,
        "max_batch_size": 64,
        **overrides,
    }
    return PredictorSettings(_env_file=None, **values)  # type: ignore[call-arg]


def service(loader: FakeLoader, **overrides: Any) -> PredictorService:
    return PredictorService(settings(**overrides), loader, LoopMetrics("predictor"))


def http(svc: PredictorService) -> httpx.AsyncClient:
    app = FastAPI()
    routes = svc.routes()
    assert routes is not None
    app.include_router(routes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://predictor")


def infer_body(texts: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        **extra,
    }


@pytest.fixture
async def loaded() -> AsyncIterator[tuple[PredictorService, FakeLoader, httpx.AsyncClient]]:
    loader = FakeLoader()
    svc = service(loader)
    await svc.on_start()
    async with http(svc) as client:
        yield svc, loader, client
    await svc.models.aclose()


def promoted(version: int, registered_model: str = NAME) -> ModelPromotedEvent:
    return ModelPromotedEvent(
        producer="promoter",
        model_key="intent/en-us",
        payload=ModelPromoted(
            registered_model=registered_model, version=version, targets=["predictor"]
        ),
    )


# ------------------------------------------------------------------ protocol


async def test_infer_answers_label_and_confidence_with_the_version(loaded: Any) -> None:
    _, _, client = loaded
    body = infer_body(["hello", "bye"], id="r-1", parameters={"conversation_id": "c-9"})
    response = await client.post(f"/v2/models/{NAME}/infer", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model_name": NAME,
        "model_version": "1",
        "id": "r-1",
        "outputs": [
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["v1:HELLO", "v1:BYE"]},
            {"name": "confidence", "shape": [2], "datatype": "FP32", "data": [0.75, 0.75]},
        ],
    }
    versioned = await client.post(f"/v2/models/{NAME}/versions/1/infer", json=body, headers=AUTH)
    assert versioned.json()["model_version"] == "1"


async def test_each_prediction_becomes_one_event_on_flush_without_text(loaded: Any) -> None:
    svc, _, client = loaded
    body = infer_body(["hello", "bye"], parameters={"conversation_id": "c-9"})
    await client.post(f"/v2/models/{NAME}/infer", json=body, headers=AUTH)
    assert svc.flush_due_in() == 0.0
    events = await svc.flush()
    assert [type(e) for e in events] == [PredictionEvent, PredictionEvent]
    first = events[0]
    assert isinstance(first, PredictionEvent)
    assert str(first.model_key) == "intent/en-us"
    assert first.payload.model_dump() == {
        "version": 1,
        "label": "v1:HELLO",
        "confidence": 0.75,
        "served_by": "predictor",
        "conversation_id": "c-9",
        "stage": "champion",
    }
    assert b"hello" not in first.to_bytes()
    assert await svc.flush() == []
    assert 0 < (svc.flush_due_in() or 0) <= 30.0  # nothing queued: only the registry recheck


def test_the_event_queue_is_bounded_and_counts_what_it_drops() -> None:
    pending = PendingPredictions(capacity=3)
    key = settings().serve[0]
    assert pending.add(key, 1, ["a", "b"], [0.5, 0.5], None) == 0
    assert pending.add(key, 1, ["c", "d", "e"], [0.5, 0.5, 0.5], None) == 2
    assert [e.payload.label for e in pending.drain(10)] == ["c", "d", "e"]
    assert pending.dropped == 2


async def test_metadata_ready_and_health(loaded: Any) -> None:
    _, _, client = loaded
    meta = (await client.get(f"/v2/models/{NAME}", headers=AUTH)).json()
    assert meta["name"] == NAME and meta["versions"] == ["1"]
    assert meta["platform"] == "mlflow_pyfunc"
    assert [i["name"] for i in meta["inputs"]] == ["text"]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("label", "BYTES"),
        ("confidence", "FP32"),
    ]
    ready = await client.get(f"/v2/models/{NAME}/ready", headers=AUTH)
    assert ready.json() == {"name": NAME, "ready": True}
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}


async def test_not_loaded_yet_is_503_and_not_ready() -> None:
    svc = service(FakeLoader(champion=None))
    await svc.on_start()
    assert svc.ready_checks()["models_loaded"]() is False
    async with http(svc) as client:
        assert (await client.get("/v2/health/ready")).status_code == 503
        response = await client.post(
            f"/v2/models/{NAME}/infer", json=infer_body(["x"]), headers=AUTH
        )
        assert response.status_code == 503 and "error" in response.json()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": ["x"]}]}, "BYTES"),
        ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["x"]}]}, "shape"),
        (
            {"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["x"]}]},
            "shape",
        ),
        ({"inputs": [{"name": "words", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, "text"),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}, "strings"),
        ({"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}, "empty"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "text", "datatype": "BYTES", "data": ["x"]}]}, "shape"),
    ],
)
async def test_a_malformed_request_is_400_with_an_error(
    loaded: Any, body: Any, fragment: str
) -> None:
    _, _, client = loaded
    response = await client.post(f"/v2/models/{NAME}/infer", json=body, headers=AUTH)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


async def test_nested_n_by_1_data_is_accepted(loaded: Any) -> None:
    _, _, client = loaded
    body = {
        "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}]
    }
    response = await client.post(f"/v2/models/{NAME}/infer", json=body, headers=AUTH)
    assert response.json()["outputs"][0]["data"] == ["v1:A", "v1:B"]


async def test_not_json_is_400(loaded: Any) -> None:
    _, _, client = loaded
    response = await client.post(f"/v2/models/{NAME}/infer", content=b"{nope", headers=AUTH)
    assert response.status_code == 400 and response.json()["error"]


async def test_unknown_model_or_version_is_404(loaded: Any) -> None:
    _, _, client = loaded
    body = infer_body(["x"])
    other = await client.post("/v2/models/sentiment-en-us/infer", json=body, headers=AUTH)
    assert other.status_code == 404 and "error" in other.json()
    old = await client.post(f"/v2/models/{NAME}/versions/7/infer", json=body, headers=AUTH)
    assert old.status_code == 404 and "v1" in old.json()["error"]
    bad = await client.post(f"/v2/models/{NAME}/versions/x/infer", json=body, headers=AUTH)
    assert bad.status_code == 400


# ------------------------------------------------------------------ security


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
async def test_without_the_token_401(loaded: Any, headers: dict[str, str]) -> None:
    _, _, client = loaded
    response = await client.post(
        f"/v2/models/{NAME}/infer", json=infer_body(["x"]), headers=headers
    )
    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await client.get(f"/v2/models/{NAME}", headers=headers)).status_code == 401


async def test_no_token_configured_means_open() -> None:
    svc = service(FakeLoader(), api_token=None)
    await svc.on_start()
    async with http(svc) as client:
        response = await client.post(f"/v2/models/{NAME}/infer", json=infer_body(["x"]))
    assert response.status_code == 200


async def test_a_body_above_the_limit_is_413(loaded: Any) -> None:
    _, _, client = loaded
    response = await client.post(
        f"/v2/models/{NAME}/infer", json=infer_body(["x" * 5000]), headers=AUTH
    )
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]


async def test_more_inputs_than_max_batch_is_422(loaded: Any) -> None:
    _, _, client = loaded
    response = await client.post(
        f"/v2/models/{NAME}/infer", json=infer_body(["x"] * 9), headers=AUTH
    )
    assert response.status_code == 422
    assert "at most 8" in response.json()["error"]


async def test_no_text_in_the_logs(loaded: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, _, client = loaded
    caplog.set_level("DEBUG")
    await client.post(f"/v2/models/{NAME}/infer", json=infer_body(["private words"]), headers=AUTH)
    await client.post(
        f"/v2/models/{NAME}/infer", json=infer_body([7, "private words"]), headers=AUTH
    )
    assert "private words" not in caplog.text


# ------------------------------------------------------------------ batching and reload


async def test_concurrent_requests_share_model_calls() -> None:
    loader = FakeLoader(delay_s=0.02)
    svc = service(loader, batch_wait_ms=10.0, max_batch_size=16)
    await svc.on_start()
    texts = [f"t{i}" for i in range(40)]
    async with http(svc) as client:
        answers = await asyncio.gather(
            *(
                client.post(f"/v2/models/{NAME}/infer", json=infer_body([t]), headers=AUTH)
                for t in texts
            )
        )
    await svc.models.aclose()
    labels = [a.json()["outputs"][0]["data"] for a in answers]
    assert labels == [[f"v1:{t.upper()}"] for t in texts]  # each answer its own texts
    sizes = loader.models[1].sizes
    assert sum(sizes) == 40
    assert len(sizes) <= 10, sizes  # one call per request would be 40
    assert max(sizes) <= 16


async def test_a_full_batch_is_scored_without_waiting_out_the_window() -> None:
    loader = FakeLoader()
    svc = service(loader, batch_wait_ms=600_000.0, max_batch_size=1)  # a 10-minute window
    await svc.on_start()
    live = svc.models.live(NAME)
    assert live is not None
    async with asyncio.timeout(60):  # a guard against a hang, not a speed claim
        scored = await live.score(["one"])
    assert scored.labels == ["v1:ONE"]
    assert loader.models[1].sizes == [1]  # scored as soon as the batch was full
    await svc.models.aclose()


async def test_a_reload_swaps_the_version_while_every_request_succeeds() -> None:
    loader = FakeLoader(delay_s=0.005, load_s=0.2)
    svc = service(loader)
    await svc.on_start()
    answers: list[httpx.Response] = []

    async with http(svc) as client:

        async def steady_load() -> None:
            for _ in range(40):
                answers.append(
                    await client.post(
                        f"/v2/models/{NAME}/infer", json=infer_body(["q"]), headers=AUTH
                    )
                )
                await asyncio.sleep(0.01)

        async def reload() -> None:
            await asyncio.sleep(0.05)
            loader.champions[NAME] = 2
            assert await svc.handle(promoted(2)) == []

        await asyncio.gather(*(steady_load() for _ in range(4)), reload())
        after = await client.post(f"/v2/models/{NAME}/infer", json=infer_body(["q"]), headers=AUTH)

    await svc.models.aclose()
    assert [a.status_code for a in answers] == [200] * 160
    versions = [a.json()["model_version"] for a in answers]
    assert set(versions) == {"1", "2"}  # served by v1 during the load, by v2 after
    for answer in answers:  # each answer scored by the version it names
        body = answer.json()
        assert body["outputs"][0]["data"] == [f"v{body['model_version']}:Q"]
    assert after.json()["model_version"] == "2"
    assert loader.loads == [1, 2]


class WarmedModel(FakeModel):
    """Answers only once warmed up (as a text version's encoder must be loaded first)."""

    def __init__(self, version: int, fails: bool = False) -> None:
        super().__init__(version)
        self.fails = fails
        self.warmed_on: list[str] = []

    def warm_up(self) -> None:
        self.warmed_on.append(threading.current_thread().name)
        if self.fails:
            raise OSError("weights missing")

    def predict(self, context: Any, texts: list[str]) -> pd.DataFrame:
        assert self.warmed_on, "scored before its warm-up"
        return super().predict(context, texts)


async def test_a_version_is_warmed_up_on_a_thread_before_it_serves() -> None:
    loader = FakeLoader()
    loader.models[1], loader.models[2] = WarmedModel(1), WarmedModel(2)
    svc = service(loader)
    await svc.on_start()
    loader.champions[NAME] = 2
    await svc.handle(promoted(2))
    async with http(svc) as client:
        answer = await client.post(f"/v2/models/{NAME}/infer", json=infer_body(["q"]), headers=AUTH)
    await svc.models.aclose()

    assert answer.status_code == 200 and answer.json()["model_version"] == "2"
    for version in (1, 2):
        model = loader.models[version]
        assert isinstance(model, WarmedModel) and len(model.warmed_on) == 1
        assert model.warmed_on[0] != threading.current_thread().name  # not on the event loop


async def test_a_version_whose_warm_up_fails_is_not_served_and_the_old_one_stays() -> None:
    loader = FakeLoader()
    loader.models[2] = WarmedModel(2, fails=True)
    svc = service(loader)
    await svc.on_start()
    loader.champions[NAME] = 2
    with pytest.raises(PermanentError, match="failed its warm-up") as failed:
        await svc.handle(promoted(2))
    async with http(svc) as client:
        answer = await client.post(f"/v2/models/{NAME}/infer", json=infer_body(["q"]), headers=AUTH)
    await svc.models.aclose()

    assert failed.value.code == "model_failed"
    assert "weights missing" not in str(failed.value)  # named by its type only
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"


async def test_the_champion_alias_decides_not_the_event() -> None:
    loader = FakeLoader()
    svc = service(loader)
    await svc.on_start()
    await svc.handle(promoted(5))  # replayed / stale: the registry still says v1
    assert loader.loads == [1]
    loader.champions[NAME] = 3
    rolled_back = ModelRolledBackEvent(
        producer="promoter",
        model_key="intent/en-us",
        payload=ModelRolledBack(registered_model=NAME, from_version=4, to_version=3, reason="drop"),
    )
    await svc.handle(rolled_back)
    live = svc.models.live(NAME)
    assert live is not None and live.version == 3
    await svc.models.aclose()


async def test_events_for_other_models_are_ignored_and_a_mismatch_refused() -> None:
    loader = FakeLoader()
    svc = service(loader)
    other = ModelPromotedEvent(
        producer="promoter",
        model_key="sentiment/en-us",
        payload=ModelPromoted(registered_model="sentiment-en-us", version=2, targets=["predictor"]),
    )
    assert await svc.handle(other) == []
    assert loader.loads == []
    with pytest.raises(PermanentError):
        await svc.handle(promoted(2, registered_model="lead-score-en-us"))


def test_decode_accepts_the_two_model_events_only() -> None:
    svc = service(FakeLoader())
    record = type("R", (), {"value": promoted(2).to_bytes()})()
    assert isinstance(svc.decode(record), ModelPromotedEvent)  # type: ignore[arg-type]


async def test_a_body_without_a_length_is_cut_at_the_limit(loaded: Any) -> None:
    _, _, client = loaded

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post(f"/v2/models/{NAME}/infer", content=chunks(), headers=AUTH)
    assert response.status_code == 413


class BrokenModel(FakeModel):
    def predict(self, context: Any, texts: list[str]) -> pd.DataFrame:
        raise ValueError(f"cannot score {texts}")


async def test_a_failing_model_answers_500_with_an_error_and_no_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loader = FakeLoader()
    loader.models[1] = BrokenModel(1)
    svc = service(loader)
    await svc.on_start()
    async with http(svc) as client:
        response = await client.post(
            f"/v2/models/{NAME}/infer", json=infer_body(["secret words"]), headers=AUTH
        )
    assert response.status_code == 500
    assert response.json() == {"error": "intent-en-us v1 failed on this request"}
    assert "secret words" not in caplog.text
    assert await svc.flush() == []


async def test_a_champion_missing_at_start_is_loaded_by_a_later_flush() -> None:
    now = [0.0]
    loader = FakeLoader(champion=None)
    svc = PredictorService(settings(), loader, LoopMetrics("predictor"), clock=lambda: now[0])
    await svc.on_start()
    assert svc.flush_due_in() == 30.0
    loader.champions[NAME] = 4
    await svc.flush()
    assert loader.loads == []  # not due yet
    now[0] = 30.0
    await svc.flush()
    assert loader.loads == [4] and svc.ready_checks()["models_loaded"]()
    assert svc.flush_due_in() == 30.0  # `recheck_s`: read again later without an event
    loader.champions[NAME] = 5  # an alias moved whose event never came
    now[0] = 60.0
    await svc.flush()
    assert loader.loads == [4, 5] and svc.models.live(NAME).version == 5  # type: ignore[union-attr]
    await svc.models.aclose()


class ProbaModel:
    """A `TextClassifier`-shaped fake: class probabilities for three labels."""

    labels = ("billing", "cancel", "other")

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        rows = {"bill": [0.7, 0.2, 0.1], "stop": [0.1, 0.6, 0.3]}
        return np.array([rows[t] for t in texts])


async def test_top_k_gives_the_k_best_labels_per_text_best_first() -> None:
    loader = FakeLoader()
    loader.models[1] = ProbaModel()  # type: ignore[assignment]
    svc = service(loader)
    await svc.on_start()
    async with http(svc) as client:
        url = f"/v2/models/{NAME}/infer"
        body = infer_body(["bill", "stop"], parameters={"top_k": 2})
        outputs = (await client.post(url, json=body, headers=AUTH)).json()["outputs"]
        bad = await client.post(
            url, json=infer_body(["bill"], parameters={"top_k": "2"}), headers=AUTH
        )
        wide = await client.post(
            url, json=infer_body(["bill"], parameters={"top_k": 9}), headers=AUTH
        )
    await svc.models.aclose()
    assert outputs == [
        {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["billing", "cancel"]},
        {"name": "confidence", "shape": [2], "datatype": "FP32", "data": [0.7, 0.6]},
        {
            "name": "top_k_labels",
            "shape": [2, 2],
            "datatype": "BYTES",
            "data": ["billing", "cancel", "cancel", "other"],
        },
        {
            "name": "top_k_confidences",
            "shape": [2, 2],
            "datatype": "FP32",
            "data": [0.7, 0.2, 0.6, 0.3],
        },
    ]
    assert bad.status_code == 400 and "top_k" in bad.json()["error"]
    assert wide.json()["outputs"][2]["shape"] == [1, 3]


async def test_top_k_on_a_model_without_probabilities_is_400(loaded: Any) -> None:
    _, _, client = loaded
    body = infer_body(["x"], parameters={"top_k": 2})
    response = await client.post(f"/v2/models/{NAME}/infer", json=body, headers=AUTH)
    assert response.status_code == 400 and "top_k" in response.json()["error"]


# ------------------------------------------------------------------ Genesys Bot Connector

BOT = f"/genesys/bot-connector/{NAME}"


def bot_body(text: str) -> dict[str, Any]:
    return {"botSessionId": "s-1", "inputMessage": {"type": "Text", "text": text}}


async def test_the_bot_connector_answers_the_intent_and_its_version(loaded: Any) -> None:
    svc, _, client = loaded
    response = await client.post(BOT, json=bot_body("refund"), headers=AUTH)
    assert response.json() == {
        "botState": "Complete",
        "intent": "v1:REFUND",
        "confidence": 0.75,
        "replymessages": [],
        "slotValues": {},
        "parameters": {"model_version": "1"},
    }
    (event,) = await svc.flush()
    assert isinstance(event, PredictionEvent)
    assert event.payload.conversation_id == "s-1"


async def test_the_bot_connector_fails_explicitly_and_keeps_the_guards(loaded: Any) -> None:
    _, _, client = loaded
    empty = (await client.post(BOT, json=bot_body("  "), headers=AUTH)).json()
    assert empty["botState"] == "Failed"
    assert empty["errorInfo"]["errorCode"] == "empty_input"
    assert (await client.post(BOT, json=bot_body("x"))).status_code == 401
    assert (await client.post(BOT, json=bot_body("x" * 5000), headers=AUTH)).status_code == 413
    assert (await client.post(BOT, json={"inputMessage": {}}, headers=AUTH)).status_code == 400
    other = "/genesys/bot-connector/sentiment-en-us"
    assert (await client.post(other, json=bot_body("x"), headers=AUTH)).status_code == 404


async def test_the_bot_connector_fails_while_the_model_is_not_loaded() -> None:
    svc = service(FakeLoader(champion=None))
    await svc.on_start()
    async with http(svc) as client:
        answer = (await client.post(BOT, json=bot_body("x"), headers=AUTH)).json()
    assert answer["botState"] == "Failed"
    assert answer["errorInfo"]["errorCode"] == "model_not_loaded"


# ------------------------------------------------------------------ in the service's app


async def test_the_routes_live_in_the_runtime_app_with_probes_and_metrics() -> None:
    svc = service(FakeLoader())
    await svc.on_start()
    state = LoopState(joined_group=True, producer_started=True)
    app = create_app(
        service="predictor",
        state=state,
        registry=svc.metrics.registry,
        ready_checks=svc.ready_checks(),
        routes=svc.routes(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
        await client.post(f"/v2/models/{NAME}/infer", json=infer_body(["a", "b"]), headers=AUTH)
        readyz = (await client.get("/readyz")).json()
        metrics = (await client.get("/metrics")).text
        docs = await client.get("/docs")
    await svc.models.aclose()
    assert readyz["checks"]["models_loaded"] is True
    assert 'driftloop_predictor_predictions_total{model_key="intent/en-us"} 2.0' in metrics
    assert 'driftloop_predictor_serving_version{model_key="intent/en-us"} 1.0' in metrics
    assert docs.status_code == 404  # /docs off
