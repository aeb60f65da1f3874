"""The Genesys Cloud simulator, driven over ASGI with a fake clock: states and counts are
asserted, never durations."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import driftloop_simulator
from driftloop_cli.main import app as cli
from driftloop_simulator import FaultSettings, SimulatorSettings, create_app, load_settings
from driftloop_simulator.nlu import CentroidModel, Example, evaluate, split_holdout
from driftloop_simulator.state import TrainingStatus

NLU = "/api/v2/languageunderstanding/domains"
DOMAIN = "0d5ad3c2-33a4-4d6e-b0b7-0f4bba0c4a11"
SECRET = "sim-secret"

VOCABULARY = {
    "billing": ["bill", "invoice", "charged", "payment", "refund"],
    "cancel": ["cancel", "terminate", "close", "subscription", "contract"],
    "delivery": ["parcel", "delivery", "courier", "shipping", "tracking"],
    "password": ["password", "login", "reset", "locked", "account"],
}
FILLERS = ["please help with my", "i have a question about the", "there is a problem with my"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Sim:
    def __init__(self, client: httpx.AsyncClient, clock: FakeClock, app: Any) -> None:
        self.client = client
        self.clock = clock
        self.app = app
        self.token: str | None = None

    async def login(self, client_id: str = "driftloop", secret: str = SECRET) -> httpx.Response:
        answer = await self.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        if answer.status_code == 200:
            self.token = answer.json()["access_token"]
        return answer

    async def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.token is None:
            await self.login()
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def stats(self) -> dict[str, Any]:
        return (await self.client.get("/admin/stats")).json()


def settings(**overrides: Any) -> SimulatorSettings:
    base: dict[str, Any] = {
        "client_secret": SECRET,
        "token_ttl_s": 60,
        "training_delay_s": 10,
        "rate_per_s": 100,
        "burst": 1000,
    }
    return SimulatorSettings(**(base | overrides))


@pytest.fixture
async def make_sim() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(**overrides: Any) -> Sim:
        clock = FakeClock()
        app = create_app(settings(**overrides), clock=clock)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
        clients.append(client)
        return Sim(client, clock, app)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def sim(make_sim: Any) -> Sim:
    return make_sim()


def utterances(intent: str, n: int = 10) -> list[str]:
    words = VOCABULARY[intent]
    return [f"{FILLERS[i % 3]} {words[i % 5]} {words[(i + 2) % 5]} {i}" for i in range(n)]


def intents_body(labelled: dict[str, list[str]]) -> list[dict[str, Any]]:
    return [
        {"name": name, "utterances": [{"segments": [{"text": t}]} for t in texts]}
        for name, texts in labelled.items()
    ]


def clean_set() -> dict[str, list[str]]:
    return {intent: utterances(intent) for intent in VOCABULARY}


def shuffled_set() -> dict[str, list[str]]:
    pairs = [(t, i) for i, texts in clean_set().items() for t in texts]
    labels = [i for _, i in pairs]
    random.Random(7).shuffle(labels)
    shuffled: dict[str, list[str]] = {i: [] for i in VOCABULARY}
    for (text, _), label in zip(pairs, labels, strict=True):
        shuffled[label].append(text)
    return shuffled


async def new_version(sim: Sim, labelled: dict[str, list[str]] | None = None) -> str:
    body = {"language": "en-us", "description": "draft"}
    answer = await sim.api("POST", f"{NLU}/{DOMAIN}/versions", json=body)
    assert answer.status_code == 200, answer.text
    version_id = answer.json()["id"]
    if labelled is not None:
        body |= {"intents": intents_body(labelled)}
        put = await sim.api("PUT", f"{NLU}/{DOMAIN}/versions/{version_id}", json=body)
        assert put.status_code == 200, put.text
    return version_id


async def trained_version(sim: Sim, labelled: dict[str, list[str]]) -> str:
    version_id = await new_version(sim, labelled)
    assert (await sim.api("POST", f"{NLU}/{DOMAIN}/versions/{version_id}/train")).status_code == 202
    sim.clock.advance(sim.app.state.simulator.settings.training_delay_s)
    return version_id


def assert_genesys_error(answer: httpx.Response, status: int) -> dict[str, Any]:
    body = answer.json()
    assert answer.status_code == status
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body["details"], list)
    uuid.UUID(body["contextId"])
    return body


# ------------------------------------------------------------------ OAuth
async def test_token_endpoint_issues_bearer_tokens(sim: Sim) -> None:
    answer = await sim.login()
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 60
    assert len(body["access_token"]) > 20


@pytest.mark.parametrize(
    ("auth", "form", "status", "error"),
    [
        (("driftloop", "wrong"), {"grant_type": "client_credentials"}, 401, "invalid_client"),
        (("someone", SECRET), {"grant_type": "client_credentials"}, 401, "invalid_client"),
        (None, {"grant_type": "client_credentials"}, 401, "invalid_client"),
        (("driftloop", SECRET), {"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
async def test_token_endpoint_answers_oauth_errors(
    sim: Sim, auth: Any, form: dict[str, str], status: int, error: str
) -> None:
    answer = await sim.client.post("/oauth/token", data=form, auth=auth)
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {"error", "description", "error_description"}
    assert body["error"] == error
    assert body["description"] == body["error_description"]


async def test_api_needs_a_valid_unexpired_token(sim: Sim) -> None:
    missing = await sim.client.get(f"{NLU}/{DOMAIN}/versions")
    assert assert_genesys_error(missing, 401)["code"] == "authentication.required"
    bogus = await sim.client.get(
        f"{NLU}/{DOMAIN}/versions", headers={"Authorization": "Bearer nope"}
    )
    assert assert_genesys_error(bogus, 401)["code"] == "bad.credentials"
    assert missing.json()["contextId"] != bogus.json()["contextId"]

    assert (await sim.api("GET", f"{NLU}/{DOMAIN}/versions")).status_code == 200
    sim.clock.advance(59)
    assert (await sim.api("GET", f"{NLU}/{DOMAIN}/versions")).status_code == 200
    sim.clock.advance(1)
    assert_genesys_error(await sim.api("GET", f"{NLU}/{DOMAIN}/versions"), 401)
    await sim.login()
    assert (await sim.api("GET", f"{NLU}/{DOMAIN}/versions")).status_code == 200


async def test_more_clients_from_settings(make_sim: Any) -> None:
    sim = make_sim(clients={"promoter": "p-secret"})
    assert (await sim.login("promoter", "p-secret")).status_code == 200
    assert (await sim.login("driftloop", SECRET)).status_code == 200
    assert (await sim.login("promoter", SECRET)).status_code == 401


# ------------------------------------------------------------------ NLU versions
async def test_version_lifecycle(sim: Sim) -> None:
    base = f"{NLU}/{DOMAIN}/versions"
    created = await sim.api("POST", base, json={"language": "en-us", "description": "draft"})
    assert created.status_code == 200
    version = created.json()
    vid = version["id"]
    assert version["domain"]["id"] == DOMAIN
    assert version["trainingStatus"] == "Untrained"
    assert version["evaluationStatus"] == "Unevaluated"
    assert version["published"] is False
    assert {"dateCreated", "dateModified", "language", "intents", "entityTypes", "entities"} <= set(
        version
    )

    body = {"language": "en-us", "intents": intents_body(clean_set())}
    assert (await sim.api("PUT", f"{base}/{vid}", json=body)).status_code == 200
    plain = (await sim.api("GET", f"{base}/{vid}")).json()
    assert [i["name"] for i in plain["intents"]] == list(VOCABULARY)
    assert all("utterances" not in i for i in plain["intents"])
    full = (await sim.api("GET", f"{base}/{vid}", params={"includeUtterances": "true"})).json()
    texts = [u["segments"][0]["text"] for u in full["intents"][0]["utterances"]]
    assert texts == utterances("billing")

    # not trained yet: no report, no detect, no publish
    for method, suffix in (("GET", "report"), ("POST", "publish")):
        assert_genesys_error(await sim.api(method, f"{base}/{vid}/{suffix}"), 409)

    train = await sim.api("POST", f"{base}/{vid}/train")
    assert train.status_code == 202
    assert set(train.json()) == {"message", "version"}
    assert train.json()["version"]["trainingStatus"] == "Training"
    assert_genesys_error(await sim.api("POST", f"{base}/{vid}/train"), 409)
    assert_genesys_error(await sim.api("POST", f"{base}/{vid}/publish"), 409)
    assert_genesys_error(await sim.api("PUT", f"{base}/{vid}", json=body), 409)

    sim.clock.advance(9.9)
    assert (await sim.api("GET", f"{base}/{vid}")).json()["trainingStatus"] == "Training"
    sim.clock.advance(0.1)
    trained = (await sim.api("GET", f"{base}/{vid}")).json()
    assert trained["trainingStatus"] == "Trained"
    assert trained["evaluationStatus"] == "Evaluated"
    assert "dateTrained" in trained and "datePublished" not in trained

    detect = await sim.api(
        "POST",
        f"{base}/{vid}/detect",
        json={"input": {"text": utterances("delivery")[3], "language": "en-us"}},
    )
    assert detect.status_code == 200
    detected = detect.json()["output"]["intents"]
    assert detected[0]["name"] == "delivery"
    assert detected[0]["entities"] == []
    assert sum(i["probability"] for i in detected) == pytest.approx(1.0, abs=1e-4)

    published = await sim.api("POST", f"{base}/{vid}/publish")
    assert published.status_code == 200
    assert published.json()["published"] is True
    assert "datePublished" in published.json()
    domain = (await sim.api("GET", f"{NLU}/{DOMAIN}")).json()
    assert domain["lastPublishedVersion"]["id"] == vid

    assert_genesys_error(await sim.api("POST", f"{base}/{vid}/publish"), 409)
    assert_genesys_error(await sim.api("PUT", f"{base}/{vid}", json=body), 409)
    assert_genesys_error(await sim.api("POST", f"{base}/{vid}/train"), 409)

    assert (await sim.api("DELETE", f"{base}/{vid}")).status_code == 204
    assert_genesys_error(await sim.api("GET", f"{base}/{vid}"), 404)


async def test_a_put_after_training_makes_the_version_untrained(make_sim: Any) -> None:
    sim = make_sim(training_delay_s=0)
    vid = await trained_version(sim, clean_set())
    body = {"language": "en-us", "intents": intents_body(shuffled_set())}
    changed = await sim.api("PUT", f"{NLU}/{DOMAIN}/versions/{vid}", json=body)
    assert changed.json()["trainingStatus"] == "Untrained"
    assert_genesys_error(await sim.api("GET", f"{NLU}/{DOMAIN}/versions/{vid}/report"), 409)


async def test_invalid_bodies_are_400_with_details(sim: Sim) -> None:
    no_language = await sim.api("POST", f"{NLU}/{DOMAIN}/versions", json={"intents": []})
    body = assert_genesys_error(no_language, 400)
    assert body["code"] == "bad.request"
    assert body["details"][0]["fieldName"] == "language"
    twice = {"language": "en-us", "intents": [{"name": "a"}, {"name": "a"}]}
    assert_genesys_error(await sim.api("POST", f"{NLU}/{DOMAIN}/versions", json=twice), 400)
    vid = await new_version(sim)
    assert_genesys_error(await sim.api("POST", f"{NLU}/{DOMAIN}/versions/{vid}/train"), 400)


async def test_report_scores_a_clean_training_set_above_a_shuffled_one(make_sim: Any) -> None:
    sim = make_sim(training_delay_s=0)
    scores = {}
    for name, labelled in (("clean", clean_set()), ("shuffled", shuffled_set())):
        vid = await trained_version(sim, labelled)
        report = (await sim.api("GET", f"{NLU}/{DOMAIN}/versions/{vid}/report")).json()
        metrics = {m["name"]: m["value"] for m in report["summary"]["metrics"]}
        assert set(metrics) == {"accuracy", "precision", "recall", "f1_score"}
        matrix = report["confusionMatrix"]
        assert [row["name"] for row in matrix] == sorted(VOCABULARY)
        assert all([c["name"] for c in row["columns"]] == sorted(VOCABULARY) for row in matrix)
        # the holdout: 2 of each intent's 10 utterances
        assert sum(c["value"] for row in matrix for c in row["columns"]) == 8
        scores[name] = metrics["f1_score"]
    assert scores["clean"] == 1.0
    assert scores["shuffled"] < 0.5


def test_holdout_is_deterministic_and_keeps_single_utterances_in_training() -> None:
    examples = [Example(t, i) for i, texts in clean_set().items() for t in texts]
    examples.append(Example("only one", "lonely"))
    train, holdout = split_holdout(examples)
    assert (train, holdout) == split_holdout(list(reversed(examples)))
    assert len(holdout) == 8 and Example("only one", "lonely") in train
    report = evaluate(examples)
    assert report.confusion["lonely"] == dict.fromkeys(sorted([*VOCABULARY, "lonely"]), 0)
    model = CentroidModel.fit(examples)
    assert model.predict("my parcel tracking courier") == "delivery"
    assert model.detect("") and {p for _, p in model.detect("")} == {0.2}


async def test_listing_is_paged(sim: Sim) -> None:
    for _ in range(30):
        await new_version(sim)
    base = f"{NLU}/{DOMAIN}/versions"
    first = (await sim.api("GET", base)).json()
    assert (first["pageSize"], first["pageNumber"], first["total"], first["pageCount"]) == (
        25,
        1,
        30,
        2,
    )
    assert len(first["entities"]) == 25
    assert first["nextUri"] == f"{base}?pageSize=25&pageNumber=2"
    second = (await sim.api("GET", first["nextUri"])).json()
    assert len(second["entities"]) == 5
    assert "nextUri" not in second
    ids = [v["id"] for v in first["entities"] + second["entities"]]
    assert len(set(ids)) == 30
    small = (await sim.api("GET", base, params={"pageSize": 7, "pageNumber": 5})).json()
    assert (len(small["entities"]), small["pageCount"]) == (2, 5)
    assert_genesys_error(await sim.api("GET", base, params={"pageSize": 0}), 400)


async def test_domains_are_seeded_or_created_on_first_use(make_sim: Any) -> None:
    strict = make_sim(auto_create=False, domains=["seeded"])
    assert (await strict.api("GET", f"{NLU}/seeded")).status_code == 200
    assert_genesys_error(await strict.api("GET", f"{NLU}/{DOMAIN}/versions"), 404)
    seeded = await strict.client.post("/admin/domains", json={"id": DOMAIN, "language": "es-es"})
    assert seeded.json()["language"] == "es-es"
    assert (await strict.api("GET", f"{NLU}/{DOMAIN}/versions")).status_code == 200

    lenient = make_sim()
    assert (await lenient.api("GET", f"{NLU}/anything")).json()["id"] == "anything"
    created = await lenient.api("POST", NLU, json={"name": "intents", "language": "en-us"})
    listing = (await lenient.api("GET", NLU)).json()
    assert created.json()["id"] in {d["id"] for d in listing["entities"]}


# ------------------------------------------------------------------ model-config API
async def test_a_chunk_sent_again_with_its_chunk_key_is_stored_once(sim: Sim) -> None:
    chunk = {"modelId": "m1", "interactions": [{"text": "hi", "intent": "a"}] * 10}
    first = await sim.api("POST", "/api/v2/ml/trainingdata", json={**chunk, "chunkKey": "k"})
    again = await sim.api("POST", "/api/v2/ml/trainingdata", json={**chunk, "chunkKey": "k"})
    other = await sim.api("POST", "/api/v2/ml/trainingdata", json={**chunk, "chunkKey": "j"})
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    stats = await sim.stats()
    assert (stats["uploads"], stats["repeated_uploads"]) == (2, 1)


async def test_model_config_api_keeps_every_upload(sim: Sim) -> None:
    chunk = [{"text": f"interaction {i}", "intent": "billing"} for i in range(20)]
    ids = []
    for key in ("a", "b"):
        answer = await sim.api(
            "POST",
            "/api/v2/ml/trainingdata",
            json={"modelId": "m1", "interactions": chunk, "key": key},
        )
        assert answer.status_code == 200
        assert answer.json()["interactionCount"] == 20 and answer.json()["key"] == key
        ids.append(answer.json()["id"])
    too_many = {"interactions": chunk * 3}
    assert_genesys_error(await sim.api("POST", "/api/v2/ml/trainingdata", json=too_many), 400)

    stats = await sim.stats()
    assert (stats["uploads"], stats["uploaded_interactions"]) == (2, 40)
    listed = (await sim.api("GET", "/api/v2/ml/trainingdata", params={"modelId": "m1"})).json()
    assert [d["id"] for d in listed["entities"]] == ids
    one = (await sim.api("GET", f"/api/v2/ml/trainingdata/{ids[0]}")).json()
    assert one["interactions"] == chunk

    model = (await sim.api("GET", "/api/v2/ml/models/m1")).json()
    assert model["status"] == "INACTIVE" and "trainingDataId" not in model
    patch = {"trainingDataId": ids[1], "status": "ACTIVE", "version": "7"}
    patched = (await sim.api("PATCH", "/api/v2/ml/models/m1", json=patch)).json()
    assert (patched["trainingDataId"], patched["status"], patched["version"]) == (
        ids[1],
        "ACTIVE",
        "7",
    )
    assert (await sim.api("GET", "/api/v2/ml/models/m1")).json()["trainingDataId"] == ids[1]
    unknown = {"trainingDataId": "never-uploaded"}
    assert_genesys_error(await sim.api("PATCH", "/api/v2/ml/models/m1", json=unknown), 400)


async def test_chunk_bounds_come_from_settings(make_sim: Any) -> None:
    sim = make_sim(min_chunk=10, max_chunk=50)
    nine = {"interactions": [{"text": "x"}] * 9}
    assert_genesys_error(await sim.api("POST", "/api/v2/ml/trainingdata", json=nine), 400)
    ten = {"interactions": [{"text": "x"}] * 10}
    assert (await sim.api("POST", "/api/v2/ml/trainingdata", json=ten)).status_code == 200


# ------------------------------------------------------------------ limits
async def test_bodies_above_the_size_limit_are_413(make_sim: Any) -> None:
    sim = make_sim(max_request_bytes=2048)
    await sim.login()
    vid = await new_version(sim)
    url = f"{NLU}/{DOMAIN}/versions/{vid}"
    small = {"language": "en-us", "intents": intents_body({"a": ["x" * 100] * 5})}
    assert (await sim.api("PUT", url, json=small)).status_code == 200
    big = {"language": "en-us", "intents": intents_body({"a": ["x" * 100] * 30})}
    body = assert_genesys_error(await sim.api("PUT", url, json=big), 413)
    assert body["code"] == "request.entity.too.large"

    async def streamed() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1000

    assert_genesys_error(await sim.api("PUT", url, content=streamed()), 413)
    assert (await sim.stats())["calls"][f"PUT {NLU}/{{domainId}}/versions/{{versionId}}"] == {
        "200": 1,
        "413": 2,
    }


async def test_token_bucket_answers_429_with_retry_after_and_ratelimit_headers(
    make_sim: Any,
) -> None:
    sim = make_sim(burst=2, rate_per_s=0.5)
    url = f"{NLU}/{DOMAIN}/versions"
    first, second, third = [await sim.api("GET", url) for _ in range(3)]
    assert [a.status_code for a in (first, second)] == [200, 200]
    assert [a.headers["inin-ratelimit-count"] for a in (first, second)] == ["1", "2"]
    for answer in (first, second, third):
        assert answer.headers["inin-ratelimit-allowed"] == "2"
        assert int(answer.headers["inin-ratelimit-reset"]) >= 1
    body = assert_genesys_error(third, 429)
    assert body["code"] == "too.many.requests"
    assert body["limit"]["value"] == 2
    assert third.headers["Retry-After"] == "2"

    sim.clock.advance(2)
    assert (await sim.api("GET", url)).status_code == 200
    assert (await sim.stats())["rate_limited"] == 1


async def test_each_client_has_its_own_bucket(make_sim: Any) -> None:
    sim = make_sim(burst=1, rate_per_s=0.01, clients={"other": "o-secret"})
    url = f"{NLU}/{DOMAIN}/versions"
    assert (await sim.api("GET", url)).status_code == 200
    assert (await sim.api("GET", url)).status_code == 429
    await sim.login("other", "o-secret")
    assert (await sim.api("GET", url)).status_code == 200


# ------------------------------------------------------------------ faults and stats
async def test_faults_through_the_admin_api(sim: Sim) -> None:
    url = f"{NLU}/{DOMAIN}/versions"
    await sim.login()
    set_faults = await sim.client.post(
        "/admin/faults", json={"error_burst": 2, "error_status": 502, "storm_429": 1}
    )
    assert set_faults.json()["error_burst"] == 2
    storm = await sim.api("GET", url)
    assert_genesys_error(storm, 429)
    assert storm.headers["Retry-After"] == "1"
    statuses = [(await sim.api("GET", url)).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert (await sim.client.get("/admin/faults")).json()["error_burst"] == 0

    await sim.client.post("/admin/faults", json={"expire_tokens": True})
    assert_genesys_error(await sim.api("GET", url), 401)
    await sim.login()
    assert (await sim.api("GET", url)).status_code == 200

    await sim.client.post("/admin/faults", json={"error_burst": 5})
    cleared = (await sim.client.delete("/admin/faults")).json()
    assert cleared == FaultSettings().model_dump()
    assert (await sim.api("GET", url)).status_code == 200
    assert (await sim.stats())["faults_injected"] == 3

    bad = await sim.client.post("/admin/faults", json={"error_status": 404})
    assert_genesys_error(bad, 400)


async def test_next_training_ends_in_error(make_sim: Any) -> None:
    sim = make_sim(faults={"fail_next_training": True})
    failed = await trained_version(sim, clean_set())
    version = (await sim.api("GET", f"{NLU}/{DOMAIN}/versions/{failed}")).json()
    assert version["trainingStatus"] == TrainingStatus.ERROR
    assert version["evaluationStatus"] == "Error"
    assert_genesys_error(await sim.api("POST", f"{NLU}/{DOMAIN}/versions/{failed}/publish"), 409)
    # the fault is spent: training again works
    assert (await sim.api("POST", f"{NLU}/{DOMAIN}/versions/{failed}/train")).status_code == 202
    sim.clock.advance(10)
    again = (await sim.api("GET", f"{NLU}/{DOMAIN}/versions/{failed}")).json()
    assert again["trainingStatus"] == "Trained"


async def test_stats_count_calls_and_the_in_flight_peak(sim: Sim) -> None:
    url = f"{NLU}/{DOMAIN}/versions"
    await sim.login()
    await sim.client.post("/admin/faults", json={"slow_s": 0.2})
    answers = await asyncio.gather(*(sim.api("GET", url) for _ in range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    stats = await sim.stats()
    assert stats["peak_in_flight"] == 3
    assert stats["in_flight"] == 0
    assert stats["calls"][f"GET {NLU}/{{domainId}}/versions"] == {"200": 3}
    assert stats["calls"]["POST /oauth/token"] == {"200": 1}
    assert stats["tokens_issued"] == 1
    reset = (await sim.client.delete("/admin/stats")).json()
    assert (reset["total_calls"], reset["peak_in_flight"]) == (0, 0)


# ------------------------------------------------------------------ settings and CLI
def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_SIM_CLIENT_ID", "c1")
    monkeypatch.setenv("DRIFTLOOP_SIM_CLIENT_SECRET", "s1")
    monkeypatch.setenv("DRIFTLOOP_SIM_TOKEN_TTL_S", "5")
    monkeypatch.setenv("DRIFTLOOP_SIM_TRAINING_DELAY_S", "0.5")
    monkeypatch.setenv("DRIFTLOOP_SIM_RATE_PER_S", "2")
    monkeypatch.setenv("DRIFTLOOP_SIM_BURST", "4")
    monkeypatch.setenv("DRIFTLOOP_SIM_MAX_REQUEST_BYTES", "1000")
    monkeypatch.setenv("DRIFTLOOP_SIM_FAULTS__ERROR_BURST", "3")
    monkeypatch.setenv("DRIFTLOOP_SIM_DOMAINS", '["d1", "d2"]')
    loaded = load_settings()
    assert loaded.credentials() == {"c1": "s1"}
    assert (loaded.token_ttl_s, loaded.training_delay_s, loaded.rate_per_s, loaded.burst) == (
        5,
        0.5,
        2,
        4,
    )
    assert (loaded.max_request_bytes, loaded.faults.error_burst) == (1000, 3)
    assert loaded.domains == ["d1", "d2"]
    assert "s1" not in repr(loaded)


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from driftloop_common.contracts.errors import ConfigError

    monkeypatch.setenv("DRIFTLOOP_SIM_BURST", "0")
    with pytest.raises(ConfigError, match="DRIFTLOOP_SIM_BURST"):
        load_settings()
    result = CliRunner().invoke(cli, ["simulator"])
    assert result.exit_code == 2
    assert "DRIFTLOOP_SIM_BURST" in result.output


def test_cli_serves_the_simulator_on_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[SimulatorSettings, str | None, int | None]] = []
    monkeypatch.setattr(
        driftloop_simulator, "serve", lambda s, *, host, port: calls.append((s, host, port))
    )
    result = CliRunner().invoke(cli, ["simulator", "--host", "0.0.0.0", "--port", "9099"])
    assert result.exit_code == 0, result.output
    assert [(host, port) for _, host, port in calls] == [("0.0.0.0", 9099)]
    assert "simulator" in CliRunner().invoke(cli, ["--help"]).output
