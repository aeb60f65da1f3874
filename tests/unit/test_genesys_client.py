"""The Genesys Cloud client against `httpx.MockTransport`: tokens, retries and their waits,
the concurrency cap, paging, typed calls, body batching, metrics and secrets.

Nothing sleeps: the client's `sleep` records the waits it was asked for, and its `clock` is
a number the test moves.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import parse_qs

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from driftloop_common.contracts.errors import (
    ConfigError,
    GenesysApiError,
    PermanentError,
    RetryableError,
)
from driftloop_common.genesys import (
    REGIONS,
    GenesysClient,
    GenesysClientOptions,
    GenesysMetrics,
    NluDomainVersion,
    NluIntent,
    NluUtterance,
    backoff_delay,
    base_urls,
    batch_utterances,
    body_size,
    region_hosts,
)
from driftloop_common.runtime.logs import forget_secrets
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import GenesysSettings

SECRET = "s3cr3t-Pa55/word"
CLIENT_ID = "client-id-42"
SETTINGS = GenesysSettings(
    region="mypurecloud.ie", client_id=CLIENT_ID, client_secret=SecretStr(SECRET)
)
DOMAIN = "dom-1"
VERSIONS_PATH = f"/api/v2/languageunderstanding/domains/{DOMAIN}/versions"
VERSIONS_T = "/api/v2/languageunderstanding/domains/{domainId}/versions"  # metric labels
VERSION_T = VERSIONS_T + "/{versionId}"

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    yield
    forget_secrets()


def version_body(version_id: str = "v-1", **extra: object) -> dict[str, object]:
    return {"id": version_id, "language": "en-us", "trainingStatus": "Untrained", **extra}


class FakeGenesys:
    """The token endpoint (tokens `tok-1`, `tok-2`…) in front of an API handler, recording
    every request. A token in `rejected` gets a 401 from the API."""

    def __init__(self, api: Handler, *, expires_in: float = 3600) -> None:
        self.api = api
        self.expires_in = expires_in
        self.token_requests: list[httpx.Request] = []
        self.api_requests: list[httpx.Request] = []
        self.rejected: set[str] = set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.token_requests.append(request)
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok-{len(self.token_requests)}",
                    "token_type": "bearer",
                    "expires_in": self.expires_in,
                },
            )
        self.api_requests.append(request)
        token = request.headers["authorization"].removeprefix("Bearer ")
        if token in self.rejected:
            return httpx.Response(401, json={"message": "token expired", "status": 401})
        answer = self.api(request)
        return await answer if isinstance(answer, Awaitable) else answer


def scripted(*answers: httpx.Response | Exception) -> Handler:
    """Answers in turn (an exception is raised), the last one forever after."""
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


class Harness:
    def __init__(
        self,
        api: Handler,
        *,
        options: GenesysClientOptions | None = None,
        expires_in: float = 3600,
        rng: Callable[[], float] = lambda: 0.0,
        settings: GenesysSettings = SETTINGS,
    ) -> None:
        self.fake = FakeGenesys(api, expires_in=expires_in)
        self.waits: list[float] = []
        self.now = 0.0
        self.registry = CollectorRegistry()

        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)

        self.client = GenesysClient(
            settings,
            options,
            transport=httpx.MockTransport(self.fake),
            metrics=GenesysMetrics(LoopMetrics("test", self.registry)),
            sleep=sleep,
            clock=lambda: self.now,
            rng=rng,
        )

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(f"driftloop_test_{name}", labels)


def ok_version(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=version_body())


def genesys_error(status: int, message: str = "nope", code: str = "bad.request") -> dict:
    return {
        "message": message,
        "code": code,
        "status": status,
        "contextId": "ctx-7f3a",
        "details": [{"errorCode": "invalid.value", "fieldName": "language"}],
    }


# ---------------------------------------------------------------- regions and settings


def test_every_required_region_has_its_api_and_login_host() -> None:
    for region in (
        "mypurecloud.com",
        "mypurecloud.ie",
        "mypurecloud.de",
        "mypurecloud.jp",
        "mypurecloud.com.au",
        "usw2.pure.cloud",
        "cac1.pure.cloud",
        "euw2.pure.cloud",
        "aps1.pure.cloud",
    ):
        assert region in REGIONS
        hosts = region_hosts(region)
        assert hosts.api_base_url == f"https://api.{region}"
        assert hosts.login_base_url == f"https://login.{region}"
    assert region_hosts("eu-west-1").region == "mypurecloud.ie"


def test_an_unknown_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"mypurecloud\.mars"):
        region_hosts("mypurecloud.mars")


def test_base_url_overrides_serve_the_simulator_on_one_host() -> None:
    sim = GenesysSettings(region="nowhere", api_base_url="http://127.0.0.1:9/")
    assert base_urls(sim) == ("http://127.0.0.1:9", "http://127.0.0.1:9")
    both = GenesysSettings(api_base_url="http://api:1", login_base_url="http://login:2")
    assert base_urls(both) == ("http://api:1", "http://login:2")
    assert base_urls(GenesysSettings(region="euw2.pure.cloud")) == (
        "https://api.euw2.pure.cloud",
        "https://login.euw2.pure.cloud",
    )


def test_credentials_are_required_and_the_concurrency_cap_is_bounded() -> None:
    with pytest.raises(ConfigError):
        GenesysClient(GenesysSettings(client_id=CLIENT_ID))
    for bad in (0, 6):
        with pytest.raises(ValidationError):
            GenesysClientOptions(max_in_flight=bad)


# ---------------------------------------------------------------- the token


async def test_the_token_is_fetched_with_client_credentials_and_cached() -> None:
    h = Harness(ok_version)
    async with h.client as client:
        for _ in range(3):
            await client.get_version(DOMAIN, "v-1")
    [token_request] = h.fake.token_requests
    assert str(token_request.url) == "https://login.mypurecloud.ie/oauth/token"
    assert parse_qs(token_request.content.decode()) == {"grant_type": ["client_credentials"]}
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert token_request.headers["authorization"] == f"Basic {basic}"
    assert len(h.fake.api_requests) == 3
    for request in h.fake.api_requests:
        assert request.url.host == "api.mypurecloud.ie"
        assert request.headers["authorization"] == "Bearer tok-1"


async def test_the_token_is_refreshed_60_s_before_it_expires() -> None:
    h = Harness(ok_version, expires_in=3600)
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
        h.now = 3539.0
        await client.get_version(DOMAIN, "v-1")
        assert len(h.fake.token_requests) == 1
        h.now = 3540.0
        await client.get_version(DOMAIN, "v-1")
    assert len(h.fake.token_requests) == 2
    assert h.fake.api_requests[-1].headers["authorization"] == "Bearer tok-2"


async def test_a_short_lived_token_is_refreshed_halfway_through_its_life() -> None:
    h = Harness(ok_version, expires_in=10)
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
        h.now = 4.9
        await client.get_version(DOMAIN, "v-1")
        h.now = 5.0
        await client.get_version(DOMAIN, "v-1")
    assert len(h.fake.token_requests) == 2


async def test_a_401_refreshes_the_token_once_and_the_call_succeeds() -> None:
    h = Harness(ok_version)
    h.fake.rejected.add("tok-1")
    async with h.client as client:
        version = await client.get_version(DOMAIN, "v-1")
    assert version.id == "v-1"
    assert len(h.fake.token_requests) == 2
    assert [r.headers["authorization"] for r in h.fake.api_requests] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert h.waits == []


async def test_a_second_401_fails_without_another_refresh() -> None:
    h = Harness(ok_version)
    h.fake.rejected.update({"tok-1", "tok-2", "tok-3"})
    async with h.client as client:
        with pytest.raises(GenesysApiError) as caught:
            await client.get_version(DOMAIN, "v-1")
    assert caught.value.status == 401
    assert len(h.fake.token_requests) == 2
    assert len(h.fake.api_requests) == 2


async def test_a_refused_client_secret_is_an_api_error_with_the_oauth_description() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            json={
                "error": "invalid_client",
                "description": "client not found",
                "error_description": "client not found",
            },
        )

    async with GenesysClient(SETTINGS, transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(GenesysApiError, match="client not found") as caught:
            await client.get_version(DOMAIN, "v-1")
    assert (caught.value.status, caught.value.code) == (401, "invalid_client")


# ---------------------------------------------------------------- retries


def rate_limited(retry_after: float | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return httpx.Response(429, headers=headers, json=genesys_error(429, "rate limited", "x"))


async def test_a_429_waits_its_retry_after() -> None:
    ok = httpx.Response(200, json=version_body())
    h = Harness(scripted(rate_limited(7), rate_limited(3), rate_limited(0), ok))
    async with h.client as client:
        assert (await client.get_version(DOMAIN, "v-1")).id == "v-1"
    assert h.waits == [7, 3, 0]
    assert len(h.fake.api_requests) == 4


async def test_a_retry_after_above_the_cap_gives_up_at_once() -> None:
    h = Harness(scripted(rate_limited(181)))
    async with h.client as client:
        with pytest.raises(RetryableError, match="181"):
            await client.get_version(DOMAIN, "v-1")
    assert h.waits == []
    assert len(h.fake.api_requests) == 1

    h = Harness(scripted(rate_limited(180), httpx.Response(200, json=version_body())))
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
    assert h.waits == [180]

    h = Harness(scripted(rate_limited(11)), options=GenesysClientOptions(retry_after_cap_s=10))
    async with h.client as client:
        with pytest.raises(RetryableError):
            await client.get_version(DOMAIN, "v-1")
    assert h.waits == []


async def test_without_retry_after_the_backoff_doubles_from_5_s_capped() -> None:
    options = GenesysClientOptions(backoff_cap_s=40, max_rate_limited=6)
    ok = httpx.Response(200, json=version_body())
    h = Harness(scripted(*[rate_limited()] * 6, ok), options=options)
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
    assert h.waits == [5, 10, 20, 40, 40, 40]  # rng() == 0: no cut


async def test_the_backoff_is_jittered_within_its_bounds() -> None:
    options = GenesysClientOptions(backoff_cap_s=40, backoff_jitter=0.2, max_rate_limited=8)
    ok = httpx.Response(200, json=version_body())
    h = Harness(scripted(*[rate_limited()] * 8, ok), options=options, rng=random.Random(7).random)
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
    nominal = [5, 10, 20, 40, 40, 40, 40, 40]
    assert len(h.waits) == len(nominal)
    for wait, top in zip(h.waits, nominal, strict=True):
        assert 0.8 * top <= wait <= top
    assert h.waits != nominal
    assert len(set(h.waits[3:])) > 1  # capped waits stay spread


def test_backoff_delay_is_the_capped_doubling_cut_by_the_jitter() -> None:
    def at(attempt: int, r: float) -> float:
        return backoff_delay(attempt, base=5, cap=60, jitter=0.5, rng=lambda: r)

    assert [at(n, 0.0) for n in range(6)] == [5, 10, 20, 40, 60, 60]
    assert [at(n, 1.0) for n in range(6)] == [2.5, 5, 10, 20, 30, 30]
    assert at(10_000, 0.0) == 60


async def test_too_many_429s_give_up_as_retryable() -> None:
    h = Harness(scripted(rate_limited(1)), options=GenesysClientOptions(max_rate_limited=3))
    async with h.client as client:
        with pytest.raises(RetryableError, match="429"):
            await client.get_version(DOMAIN, "v-1")
    assert h.waits == [1, 1, 1]
    assert len(h.fake.api_requests) == 4


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_a_5xx_is_retried_a_bounded_number_of_times_then_retryable(status: int) -> None:
    h = Harness(
        scripted(httpx.Response(status, json=genesys_error(status, "down", "server.error"))),
        options=GenesysClientOptions(max_retries=3),
    )
    async with h.client as client:
        with pytest.raises(RetryableError, match=f"{status}") as caught:
            await client.get_version(DOMAIN, "v-1")
    assert not isinstance(caught.value, PermanentError)
    assert len(h.fake.api_requests) == 4
    assert h.waits == [5, 10, 20]


async def test_a_5xx_then_a_success_returns_the_answer() -> None:
    ok = httpx.Response(200, json=version_body())
    h = Harness(scripted(httpx.Response(503), httpx.Response(502), ok))
    async with h.client as client:
        assert (await client.get_version(DOMAIN, "v-1")).id == "v-1"
    assert h.waits == [5, 10]


async def test_timeouts_and_dropped_connections_are_retried() -> None:
    ok = httpx.Response(200, json=version_body())
    h = Harness(scripted(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), ok))
    async with h.client as client:
        assert (await client.get_version(DOMAIN, "v-1")).id == "v-1"
    assert h.waits == [5, 10]
    assert h.sample("genesys_calls_total", endpoint=f"GET {VERSION_T}", status="timeout") == 1

    h = Harness(scripted(httpx.ReadTimeout("slow")), options=GenesysClientOptions(max_retries=2))
    async with h.client as client:
        with pytest.raises(RetryableError, match="timed out"):
            await client.get_version(DOMAIN, "v-1")
    assert len(h.fake.api_requests) == 3


@pytest.mark.parametrize(
    ("status", "code"), [(400, "bad.request"), (404, "not.found"), (409, "conflict"), (501, "x")]
)
async def test_other_4xx_and_501_fail_at_once_with_genesys_error_body(
    status: int, code: str
) -> None:
    body = genesys_error(status, "The language is not supported", code)
    h = Harness(scripted(httpx.Response(status, json=body)))
    async with h.client as client:
        with pytest.raises(GenesysApiError) as caught:
            await client.get_version(DOMAIN, "v-1")
    error = caught.value
    assert isinstance(error, PermanentError)
    assert (error.status, error.code, error.context_id) == (status, code, "ctx-7f3a")
    assert error.body == body
    assert error.details == [{"errorCode": "invalid.value", "fieldName": "language"}]
    assert "The language is not supported" in str(error)
    assert "ctx-7f3a" in str(error)
    assert "languageunderstanding/domains/{domainId}/versions/{versionId}" in str(error)
    assert len(h.fake.api_requests) == 1
    assert h.waits == []


async def test_an_answer_of_the_wrong_shape_is_permanent() -> None:
    h = Harness(scripted(httpx.Response(200, json={"id": "v-1"})))  # no language
    async with h.client as client:
        with pytest.raises(PermanentError, match="language") as caught:
            await client.get_version(DOMAIN, "v-1")
    assert caught.value.code == "genesys_bad_response"


# ---------------------------------------------------------------- concurrency


async def test_calls_in_flight_never_exceed_the_limit() -> None:
    in_flight = 0
    most = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200, json=version_body())

    h = Harness(slow, options=GenesysClientOptions(max_in_flight=3))
    async with h.client as client:
        results = await asyncio.gather(*(client.get_version(DOMAIN, "v-1") for _ in range(40)))
    assert len(results) == 40
    assert most == 3
    assert len(h.fake.token_requests) == 1  # one fetch for all of them
    assert h.sample("genesys_in_flight") == 0


async def test_the_default_limit_is_4() -> None:
    in_flight = 0
    most = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200, json=version_body())

    h = Harness(slow)
    async with h.client as client:
        await asyncio.gather(*(client.get_version(DOMAIN, f"v-{i}") for i in range(25)))
    assert most == 4


# ---------------------------------------------------------------- typed calls


async def test_list_versions_follows_the_pages() -> None:
    ids = [f"v-{i}" for i in range(7)]

    def pages(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["pageNumber"])
        size = int(request.url.params["pageSize"])
        chunk = ids[(number - 1) * size : number * size]
        last = number * size >= len(ids)
        body = {
            "entities": [version_body(i) for i in chunk],
            "pageNumber": number,
            "pageSize": size,
            "total": len(ids),
            "pageCount": 3,
            "nextUri": None if last else f"{VERSIONS_PATH}?pageNumber={number + 1}&pageSize={size}",
        }
        return httpx.Response(200, json=body)

    h = Harness(pages)
    async with h.client as client:
        versions = await client.list_versions(DOMAIN, page_size=3)
    assert [v.id for v in versions] == ids
    assert [r.url.params["pageNumber"] for r in h.fake.api_requests] == ["1", "2", "3"]
    assert h.sample("genesys_calls_total", endpoint=f"GET {VERSIONS_T}", status="200") == 3


async def test_versions_are_created_updated_trained_published_and_deleted() -> None:
    seen: list[tuple[str, str, object]] = []

    def api(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        path = request.url.path
        if request.method == "DELETE":
            return httpx.Response(204)
        if path.endswith("/train"):
            return httpx.Response(
                202,
                json={"message": "started", "version": version_body(trainingStatus="Training")},
            )
        if path.endswith("/publish"):
            return httpx.Response(200, json=version_body(published=True))
        if request.method == "POST":
            return httpx.Response(
                200, json={**body, "id": "v-new", "dateCreated": "2026-01-02T03:04:05.000Z"}
            )
        return httpx.Response(200, json=body)

    draft = NluDomainVersion(
        language="en-us",
        description="challenger 3",
        intents=[NluIntent(name="billing", utterances=[NluUtterance.of("my bill is wrong")])],
    )
    h = Harness(api)
    async with h.client as client:
        created = await client.create_version(DOMAIN, draft)
        assert created.id == "v-new"
        assert created.date_created is not None
        assert created.intents[0].utterances[0].text == "my bill is wrong"
        updated = await client.update_version(DOMAIN, "v-new", created)
        assert updated.id == "v-new"
        trained = await client.train_version(DOMAIN, "v-new")
        assert trained.message == "started"
        assert trained.version.training_status == "Training"
        published = await client.publish_version(DOMAIN, "v-new")
        assert published.published is True
        assert await client.delete_version(DOMAIN, "v-new") is None

    (_, path, body), (put_method, put_path, _), *_ = seen
    assert path == VERSIONS_PATH
    assert body == {
        "description": "challenger 3",
        "language": "en-us",
        "intents": [
            {"name": "billing", "utterances": [{"segments": [{"text": "my bill is wrong"}]}]}
        ],
        "entityTypes": [],
        "entities": [],
    }
    assert (put_method, put_path) == ("PUT", f"{VERSIONS_PATH}/v-new")
    assert [m for m, _, _ in seen] == ["POST", "PUT", "POST", "POST", "DELETE"]
    for endpoint, status in [
        (f"POST {VERSIONS_T}", "200"),
        (f"PUT {VERSION_T}", "200"),
        (f"POST {VERSION_T}/train", "202"),
        (f"POST {VERSION_T}/publish", "200"),
        (f"DELETE {VERSION_T}", "204"),
    ]:
        assert h.sample("genesys_calls_total", endpoint=endpoint, status=status) == 1


async def test_get_version_asks_for_utterances_only_when_told() -> None:
    h = Harness(ok_version)
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
        await client.get_version(DOMAIN, "v-1", include_utterances=True)
    assert [r.url.params.get("includeUtterances") for r in h.fake.api_requests] == [None, "true"]


async def test_a_publish_conflict_is_a_409() -> None:
    body = genesys_error(409, "version is still training", "conflict")
    h = Harness(scripted(httpx.Response(409, json=body)))
    async with h.client as client:
        with pytest.raises(GenesysApiError) as caught:
            await client.publish_version(DOMAIN, "v-1")
    assert caught.value.status == 409


async def test_detect_and_report() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/detect"):
            assert json.loads(request.content) == {
                "input": {"text": "cancel my plan", "language": "en-us"}
            }
            return httpx.Response(
                200,
                json={
                    "version": version_body(),
                    "output": {
                        "intents": [
                            {"name": "cancel", "probability": 0.91, "entities": []},
                            {"name": "billing", "probability": 0.09},
                        ]
                    },
                },
            )
        return httpx.Response(
            200,
            json={
                "version": version_body(),
                "confusionMatrix": [
                    {"name": "cancel", "columns": [{"name": "cancel", "value": 9}]},
                ],
                "summary": {"metrics": [{"name": "f1", "value": 0.87}]},
            },
        )

    h = Harness(api)
    async with h.client as client:
        intents = await client.detect(DOMAIN, "v-1", "cancel my plan", "en-us")
        report = await client.report(DOMAIN, "v-1")
    assert [(i.name, i.probability) for i in intents] == [("cancel", 0.91), ("billing", 0.09)]
    assert report.metric("f1") == 0.87
    assert report.metric("accuracy") is None
    assert report.confusion_matrix[0].columns[0].value == 9


async def test_the_model_config_api() -> None:
    seen: list[tuple[str, str, object]] = []

    def api(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.url.path == "/api/v2/ml/trainingdata":
            return httpx.Response(201, json={"trainingDataId": "td-9"})
        if request.method == "PATCH":
            return httpx.Response(200, json={"id": "m-1", **body})
        return httpx.Response(
            200, json={"id": "m-1", "status": "ACTIVE", "version": 3, "trainingDataId": "td-1"}
        )

    h = Harness(api)
    rows = [{"text": "hi", "intent": "greet"}, {"text": "bye", "intent": "leave"}]
    async with h.client as client:
        assert await client.upload_training_data("m-1", rows, extra={"chunkKey": "k"}) == "td-9"
        model = await client.get_model("m-1")
        patched = await client.patch_model("m-1", "td-9", "ACTIVE", "1.2.0")
    assert (model.version, model.training_data_id) == ("3", "td-1")
    assert (patched.training_data_id, patched.status, patched.version) == (
        "td-9",
        "ACTIVE",
        "1.2.0",
    )
    assert seen[0] == (
        "POST",
        "/api/v2/ml/trainingdata",
        {"chunkKey": "k", "modelId": "m-1", "interactions": rows},
    )
    assert seen[2] == (
        "PATCH",
        "/api/v2/ml/models/m-1",
        {"trainingDataId": "td-9", "status": "ACTIVE", "version": "1.2.0"},
    )
    endpoint = "PATCH /api/v2/ml/models/{modelId}"
    assert h.sample("genesys_calls_total", endpoint=endpoint, status="200") == 1


async def test_ids_are_escaped_in_the_path_and_never_in_metric_labels() -> None:
    h = Harness(ok_version)
    async with h.client as client:
        await client.get_version("DOMX/../y", "VER 1")
    assert (
        h.fake.api_requests[0]
        .url.raw_path.decode()
        .endswith("/domains/DOMX%2F..%2Fy/versions/VER%201")
    )
    labels = {
        sample.labels.get("endpoint", "")
        for metric in h.registry.collect()
        for sample in metric.samples
    }
    assert f"GET {VERSION_T}" in labels
    assert not any("DOMX" in label or "VER" in label for label in labels)


# ---------------------------------------------------------------- metrics


async def test_rate_limit_headers_and_call_times_become_metrics() -> None:
    headers = {
        "inin-ratelimit-allowed": "180",
        "inin-ratelimit-count": "17",
        "inin-ratelimit-reset": "42",
    }
    h = Harness(scripted(httpx.Response(200, headers=headers, json=version_body())))
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
    assert h.sample("genesys_ratelimit", header="allowed") == 180
    assert h.sample("genesys_ratelimit", header="count") == 17
    assert h.sample("genesys_ratelimit", header="reset") == 42
    assert h.sample("genesys_call_seconds_count", endpoint=f"GET {VERSION_T}") == 1
    assert h.sample("genesys_calls_total", endpoint="POST /oauth/token", status="200") == 1


async def test_retries_are_counted_by_reason() -> None:
    ok = httpx.Response(200, json=version_body())
    h = Harness(scripted(rate_limited(1), httpx.Response(503), ok))
    async with h.client as client:
        await client.get_version(DOMAIN, "v-1")
    endpoint = f"GET {VERSION_T}"
    assert h.sample("genesys_retries_total", endpoint=endpoint, reason="rate_limited") == 1
    assert h.sample("genesys_retries_total", endpoint=endpoint, reason="server_error") == 1
    assert h.sample("genesys_calls_total", endpoint=endpoint, status="429") == 1


# ---------------------------------------------------------------- batching


def big_version() -> NluDomainVersion:
    rng = random.Random(3)
    words = ["bill", "refund", "café", "naïve", "日本", "cancel", 'quote"d', "back\\slash"]
    intents = [
        NluIntent(
            name=f"intent-{i}",
            description=f"intent number {i}",
            utterances=[
                NluUtterance.of(" ".join(rng.choices(words, k=rng.randint(1, 40))))
                for _ in range(rng.randint(50, 300))
            ],
        )
        for i in range(6)
    ]
    intents.insert(2, NluIntent(name="empty"))
    return NluDomainVersion(id="v-9", language="en-us", description="draft", intents=intents)


@pytest.mark.parametrize("limit", [2_000, 9_000, 50_000])
def test_batches_stay_under_the_limit_and_lose_no_utterance(limit: int) -> None:
    version = big_version()
    batches = batch_utterances(version, limit_bytes=limit)
    assert len(batches) > 1
    for batch in batches:
        assert body_size(batch) <= limit
        assert (batch.id, batch.language, batch.description) == ("v-9", "en-us", "draft")
    got: dict[str, list[str]] = {}
    for batch in batches:
        for intent in batch.intents:
            got.setdefault(intent.name, []).extend(u.text for u in intent.utterances)
    assert got == {i.name: [u.text for u in i.utterances] for i in version.intents}
    # Batches are full: the next batch's first utterance would not have fitted.
    for batch, following in itertools.pairwise(batches):
        first = following.intents[0]
        last = batch.intents[-1]
        if last.name == first.name:
            more = last.model_copy(update={"utterances": [*last.utterances, first.utterances[0]]})
            grown = [*batch.intents[:-1], more]
        else:
            grown = [*batch.intents, first.model_copy(update={"utterances": first.utterances[:1]})]
        assert body_size(batch.model_copy(update={"intents": grown})) > limit


def test_a_version_under_the_limit_is_one_batch() -> None:
    version = big_version()
    [batch] = batch_utterances(version)  # 480 KiB by default
    assert batch.to_body() == version.to_body()


def test_one_utterance_bigger_than_a_body_is_permanent() -> None:
    version = NluDomainVersion(
        language="en-us", intents=[NluIntent(name="x", utterances=[NluUtterance.of("a" * 5000)])]
    )
    with pytest.raises(PermanentError) as caught:
        batch_utterances(version, limit_bytes=1000)
    assert caught.value.code == "utterance_too_large"


async def test_body_size_is_the_size_the_client_sends() -> None:
    sizes: list[int] = []

    def api(request: httpx.Request) -> httpx.Response:
        sizes.append(len(request.content))
        return httpx.Response(200, content=request.content)

    h = Harness(api)
    batches = batch_utterances(big_version(), limit_bytes=9_000)
    async with h.client as client:
        for batch in batches:
            await client.update_version(DOMAIN, "v-9", batch)
    assert sizes == [body_size(b) for b in batches]


# ---------------------------------------------------------------- secrets


async def test_no_secret_or_token_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = f"client {CLIENT_ID} with secret {SECRET} and token tok-2 refused"
    answers = scripted(
        rate_limited(1),
        httpx.Response(503, json={"message": f"down, secret {SECRET}"}),
        httpx.Response(400, json=genesys_error(400, leaky)),
    )
    h = Harness(answers)
    h.fake.rejected.add("tok-1")  # a 401 first: a refresh, so two tokens in play
    errors: list[Exception] = []
    async with h.client as client:
        with pytest.raises(GenesysApiError) as caught:
            await client.get_version(DOMAIN, "v-1")
        errors.append(caught.value)
    assert len(h.fake.token_requests) == 2

    h = Harness(scripted(httpx.Response(503, json={"message": f"tok-1 {SECRET}"})))
    async with h.client as client:
        with pytest.raises(RetryableError) as retry_caught:
            await client.get_version(DOMAIN, "v-1")
        errors.append(retry_caught.value)

    async def oauth_refuses(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"error": "invalid_client", "error_description": f"bad secret {SECRET}"}
        )

    async with GenesysClient(SETTINGS, transport=httpx.MockTransport(oauth_refuses)) as client:
        with pytest.raises(GenesysApiError) as oauth_caught:
            await client.get_version(DOMAIN, "v-1")
        errors.append(oauth_caught.value)

    forbidden = [
        SECRET,
        "tok-1",
        "tok-2",
        base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode(),
    ]
    texts = [caplog.text]
    texts += [str(record.__dict__) for record in caplog.records]
    texts += [f"{e} {e!r} {e.__cause__!r}" for e in errors]
    assert "refused" in str(errors[0])  # the message is there, masked
    for text in texts:
        for secret in forbidden:
            assert secret not in text, secret
    assert any("retried" in record.getMessage() for record in caplog.records)
