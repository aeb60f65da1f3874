"""The Genesys Cloud client: the one place driftloop talks to Genesys's HTTP API.

Every call:

- carries an OAuth client-credentials token (`POST {login}/oauth/token`, HTTP Basic
  `client_id:client_secret`), cached and fetched again 60 s before it expires (as Genesys's
  SDKs do) or once when the API answers 401;
- waits for one of `max_in_flight` slots (default 4, at most 5) for each request it sends;
- is retried by tenacity when the answer says "later" (the `_checked` table below): a 429
  after its `Retry-After` (giving up above `retry_after_cap_s`, 180 s, as the Go SDK does)
  or, without one, after an exponential, jittered, capped backoff (5 s, 10 s, 20 s…), like a
  5xx (but 501), a 408, a timeout or a dropped connection; a bounded number of times, then a
  `RetryableError`;
- fails at once with a `GenesysApiError` for any other 4xx (and a 501), with Genesys's error
  body (`message`, `code`, `status`, `contextId`, `details[]`);
- is counted per endpoint template (`GET /api/v2/…/versions/{versionId}`: never an id) and
  status, timed, and its `inin-ratelimit-*` headers read into gauges.

No token or secret reaches a log line or an error message: both are registered with the log
redactor, and error texts are scrubbed before they are raised.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from driftloop_common.contracts.errors import (
    ConfigError,
    GenesysApiError,
    PermanentError,
    RetryableError,
)
from driftloop_common.genesys.batching import encode_body
from driftloop_common.genesys.models import (
    DetectedIntent,
    MlModel,
    NluDetectionResponse,
    NluDomainVersion,
    NluDomainVersionListing,
    NluReport,
    NluTrainResponse,
    TrainingDataCreated,
)
from driftloop_common.genesys.regions import base_urls
from driftloop_common.runtime.logs import MASK, mask, redact
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter, gauge, histogram
from driftloop_common.runtime.settings import GenesysSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

TOKEN = "/oauth/token"
DOMAIN = "/api/v2/languageunderstanding/domains/{domainId}"
VERSIONS = DOMAIN + "/versions"
VERSION = VERSIONS + "/{versionId}"
TRAINING_DATA = "/api/v2/ml/trainingdata"
MODEL = "/api/v2/ml/models/{modelId}"
_MAX_PAGES = 1000  # a listing that never ends is a bug on the other side, not a reason to loop


class GenesysClientOptions(BaseModel):
    """How the client calls Genesys Cloud (a settings sub-model for services that use it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_in_flight: int = Field(default=4, ge=1, le=5)  # Genesys: at most 3–5 concurrent calls
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=4, ge=0)  # after a 5xx, 408, timeout or transport error
    # 429s one call waits out (each for its Retry-After): a burst of hundreds of calls
    # (a shadow check) waits its turn in a 180-call bucket instead of giving up.
    max_rate_limited: int = Field(default=100, ge=0)
    retry_after_cap_s: float = Field(default=180.0, ge=0)  # a longer Retry-After: give up
    backoff_base_s: float = Field(default=5.0, gt=0)
    backoff_cap_s: float = Field(default=60.0, gt=0)
    backoff_jitter: float = Field(default=0.2, ge=0, le=1)  # a wait is cut by up to this part
    token_refresh_margin_s: float = Field(default=60.0, ge=0)
    page_size: int = Field(default=25, ge=1, le=500)


def backoff_delay(
    attempt: int, *, base: float, cap: float, jitter: float, rng: Callable[[], float]
) -> float:
    """The wait before retry number `attempt + 1`: `base · 2^attempt`, capped at `cap`, then
    cut by a random part of up to `jitter` (so the wait is in `[(1 - jitter)·d, d]`)."""
    nominal = min(cap, base * 2.0 ** min(attempt, 64))
    return nominal * (1.0 - jitter * rng())


class GenesysMetrics(MetricSet):
    """The client's metrics, made on a service's `LoopMetrics` (one set per registry)."""

    calls = counter(
        "genesys_calls_total",
        "Genesys Cloud requests sent (each attempt), by endpoint template and status.",
        "endpoint",
        "status",
    )
    seconds = histogram(
        "genesys_call_seconds",
        "Seconds one Genesys Cloud request took, by endpoint template.",
        "endpoint",
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )
    retries = counter(
        "genesys_retries_total",
        "Genesys Cloud calls tried again, by endpoint template and reason.",
        "endpoint",
        "reason",
    )
    in_flight = gauge("genesys_in_flight", "Genesys Cloud requests in flight.")
    ratelimit = gauge(
        "genesys_ratelimit",
        "The latest answer's inin-ratelimit-* headers (allowed, count, reset in seconds).",
        "header",
    )

    def __init__(self, metrics: LoopMetrics | None = None) -> None:
        super().__init__(metrics or LoopMetrics("genesys-client"))


Reason = Literal["rate_limited", "server_error", "timeout", "transport_error"]


class _Transient(Exception):
    """One attempt failed in a way worth another: the only exception tenacity retries."""

    def __init__(self, reason: Reason, detail: str, *, retry_after: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


class _Schedule:
    """One call's retry budget and waits, for tenacity's `wait` and `stop`."""

    def __init__(self, options: GenesysClientOptions, rng: Callable[[], float]) -> None:
        self.options = options
        self.rng = rng
        self.backoffs = 0
        self.failures = 0
        self.rate_limited = 0

    def wait(self, state: RetryCallState) -> float:
        exc = _transient(state)
        if exc.retry_after is not None:
            return exc.retry_after
        o = self.options
        delay = backoff_delay(
            self.backoffs,
            base=o.backoff_base_s,
            cap=o.backoff_cap_s,
            jitter=o.backoff_jitter,
            rng=self.rng,
        )
        self.backoffs += 1
        return delay

    def stop(self, state: RetryCallState) -> bool:
        if _transient(state).reason == "rate_limited":
            self.rate_limited += 1
            return self.rate_limited > self.options.max_rate_limited
        self.failures += 1
        return self.failures > self.options.max_retries


def _transient(state: RetryCallState) -> _Transient:
    exc = state.outcome.exception() if state.outcome else None
    assert isinstance(exc, _Transient)  # tenacity retries nothing else
    return exc


@contextmanager
def _transport_errors() -> Iterator[None]:
    """httpx's errors in driftloop's terms: every one of them is worth another attempt but a
    URL httpx cannot use, which is a configuration error."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise _Transient("timeout", f"timed out ({type(exc).__name__})") from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ConfigError(f"Genesys Cloud URL unusable: {exc}") from exc
    except httpx.TransportError as exc:
        raise _Transient("transport_error", f"{type(exc).__name__}: {exc}") from exc


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (a number or an HTTP date), or None when absent or unusable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _header_number(response: httpx.Response, name: str) -> float | None:
    try:
        value = float(response.headers[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


class _TokenResponse(BaseModel):
    access_token: str = Field(min_length=1)
    token_type: str = "bearer"
    expires_in: float = Field(gt=0)


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # on the client's clock


class GenesysClient:
    """An async Genesys Cloud API client; use it as `async with GenesysClient(...) as gc:`.

    `transport` replaces httpx's network transport (`httpx.MockTransport` in tests);
    `sleep`, `clock` and `rng` replace `asyncio.sleep`, `time.monotonic` and
    `random.random` (tests wait for nothing and choose the jitter).
    """

    def __init__(
        self,
        settings: GenesysSettings,
        options: GenesysClientOptions | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: GenesysMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not settings.client_id or settings.client_secret is None:
            raise ConfigError("Genesys Cloud needs a client id and a client secret")
        secret = settings.client_secret.get_secret_value()
        if not secret:
            raise ConfigError("Genesys Cloud needs a client id and a client secret")
        self.options = options or GenesysClientOptions()
        self.api_base_url, self.login_base_url = base_urls(settings)
        self._client_id = settings.client_id
        self._secret = secret
        redact(secret)
        self._metrics = metrics or GenesysMetrics()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.options.timeout_s),
            headers={"Accept": "application/json", "User-Agent": "driftloop"},
        )
        self._slots = asyncio.Semaphore(self.options.max_in_flight)
        self._token_lock = asyncio.Lock()
        self._token: _Token | None = None
        self._tokens_seen: list[str] = []  # every token this client held, for scrubbing

    async def __aenter__(self) -> GenesysClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ NLU domain versions

    async def create_version(self, domain_id: str, version: NluDomainVersion) -> NluDomainVersion:
        """`POST …/versions`: a new draft version."""
        response = await self._call(
            "POST", VERSIONS, path={"domainId": domain_id}, body=version.to_body()
        )
        return _parse(response, NluDomainVersion)

    async def get_version(
        self, domain_id: str, version_id: str, *, include_utterances: bool = False
    ) -> NluDomainVersion:
        """`GET …/versions/{versionId}` (with its intents' utterances when asked)."""
        params = {"includeUtterances": "true"} if include_utterances else None
        response = await self._call(
            "GET", VERSION, path={"domainId": domain_id, "versionId": version_id}, params=params
        )
        return _parse(response, NluDomainVersion)

    async def list_versions(
        self,
        domain_id: str,
        *,
        include_utterances: bool = False,
        published_only: bool = False,
        page_size: int | None = None,
    ) -> list[NluDomainVersion]:
        """Every version of the domain, following the listing's pages (`nextUri`)."""
        params: dict[str, str] = {
            "pageNumber": "1",
            "pageSize": str(page_size or self.options.page_size),
        }
        if include_utterances:
            params["includeUtterances"] = "true"
        if published_only:
            params["publishedOnly"] = "true"
        versions: list[NluDomainVersion] = []
        for _ in range(_MAX_PAGES):
            response = await self._call(
                "GET", VERSIONS, path={"domainId": domain_id}, params=params
            )
            page = _parse(response, NluDomainVersionListing)
            versions += page.entities
            done = page.total is not None and len(versions) >= page.total
            if not page.next_uri or not page.entities or done:
                return versions
            number = int(params["pageNumber"])
            params = {**params, **dict(parse_qsl(urlsplit(page.next_uri).query))}
            if not params["pageNumber"].isdigit() or int(params["pageNumber"]) <= number:
                params["pageNumber"] = str(number + 1)
        raise PermanentError(
            f"GET {VERSIONS}: more than {_MAX_PAGES} pages", code="genesys_bad_response"
        )

    async def update_version(
        self, domain_id: str, version_id: str, version: NluDomainVersion
    ) -> NluDomainVersion:
        """`PUT …/versions/{versionId}`: the draft replaced by `version`."""
        response = await self._call(
            "PUT",
            VERSION,
            path={"domainId": domain_id, "versionId": version_id},
            body=version.to_body(),
        )
        return _parse(response, NluDomainVersion)

    async def delete_version(self, domain_id: str, version_id: str) -> None:
        await self._call("DELETE", VERSION, path={"domainId": domain_id, "versionId": version_id})

    async def train_version(self, domain_id: str, version_id: str) -> NluTrainResponse:
        """`POST …/versions/{versionId}/train`: training starts (poll `training_status`)."""
        response = await self._call(
            "POST", VERSION + "/train", path={"domainId": domain_id, "versionId": version_id}
        )
        return _parse(response, NluTrainResponse)

    async def publish_version(self, domain_id: str, version_id: str) -> NluDomainVersion:
        """`POST …/versions/{versionId}/publish`; a 409 (`GenesysApiError.status`) when the
        version is still training or already published."""
        response = await self._call(
            "POST", VERSION + "/publish", path={"domainId": domain_id, "versionId": version_id}
        )
        return _parse(response, NluDomainVersion)

    async def detect(
        self, domain_id: str, version_id: str, text: str, language: str
    ) -> list[DetectedIntent]:
        """`POST …/versions/{versionId}/detect`: the intents `text` is detected as."""
        response = await self._call(
            "POST",
            VERSION + "/detect",
            path={"domainId": domain_id, "versionId": version_id},
            body={"input": {"text": text, "language": language}},
        )
        return _parse(response, NluDetectionResponse).output.intents

    async def report(self, domain_id: str, version_id: str) -> NluReport:
        """`GET …/versions/{versionId}/report`: confusion matrix and summary metrics."""
        response = await self._call(
            "GET", VERSION + "/report", path={"domainId": domain_id, "versionId": version_id}
        )
        return _parse(response, NluReport)

    # ------------------------------------------------------------ model-config API

    async def upload_training_data(
        self,
        model_id: str,
        interactions: Sequence[Mapping[str, Any] | BaseModel],
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """`POST /api/v2/ml/trainingdata` (one chunk): the chunk's `trainingDataId`.

        `extra` adds fields to the body (a chunk key a resumed upload can look for)."""
        body = {
            **(extra or {}),
            "modelId": model_id,
            "interactions": [
                item.model_dump(mode="json", by_alias=True, exclude_none=True)
                if isinstance(item, BaseModel)
                else dict(item)
                for item in interactions
            ],
        }
        response = await self._call("POST", TRAINING_DATA, body=body)
        return _parse(response, TrainingDataCreated).training_data_id

    async def get_model(self, model_id: str) -> MlModel:
        response = await self._call("GET", MODEL, path={"modelId": model_id})
        return _parse(response, MlModel)

    async def patch_model(
        self, model_id: str, training_data_id: str, status: str, version: str
    ) -> MlModel:
        """`PATCH /api/v2/ml/models/{modelId}`: the model serves `training_data_id` now."""
        body = {"trainingDataId": training_data_id, "status": status, "version": version}
        response = await self._call("PATCH", MODEL, path={"modelId": model_id}, body=body)
        return _parse(response, MlModel)

    # ------------------------------------------------------------ the call

    async def _call(
        self,
        method: str,
        template: str,
        *,
        path: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """One API call, retried as the module docstring says; a 2xx response or an error."""
        endpoint = f"{method} {template}"
        url = self.api_base_url + template.format(
            **{name: quote(str(value), safe="") for name, value in (path or {}).items()}
        )
        content = None if body is None else encode_body(body)
        schedule = _Schedule(self.options, self._rng)

        def before_sleep(state: RetryCallState) -> None:
            exc = _transient(state)
            self._metrics.retries.labels(endpoint, exc.reason).inc()
            log.warning(
                "Genesys Cloud call retried",
                extra={
                    "endpoint": endpoint,
                    "reason": exc.reason,
                    "detail": self._scrub(str(exc)),
                    "wait_s": round(state.upcoming_sleep, 3),
                    "attempt": state.attempt_number,
                },
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            wait=schedule.wait,
            stop=schedule.stop,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(
                self._authorized, method, url, endpoint, params, content
            )
        except _Transient as exc:
            attempts = schedule.failures + schedule.rate_limited
            raise RetryableError(
                self._scrub(f"{endpoint}: gave up after {attempts} attempts: {exc}")
            ) from exc
        return response

    async def _authorized(
        self,
        method: str,
        url: str,
        endpoint: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
    ) -> httpx.Response:
        """One attempt with a token, and one more with a fresh token after a 401."""
        headers = {} if content is None else {"Content-Type": "application/json"}
        token = await self._access_token()
        response = await self._send(
            method, url, endpoint, params=params, content=content, headers=headers, token=token
        )
        if response.status_code == 401:
            self._forget(token)
            token = await self._access_token()
            response = await self._send(
                method, url, endpoint, params=params, content=content, headers=headers, token=token
            )
        return self._checked(response, endpoint)

    async def _send(
        self,
        method: str,
        url: str,
        endpoint: str,
        *,
        token: str | None = None,
        auth: httpx.Auth | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request in one of the `max_in_flight` slots, counted and timed."""
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self._slots:
            self._metrics.in_flight.inc()
            started = time.perf_counter()
            try:
                with _transport_errors():
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        content=content,
                        data=data,
                        headers=headers,
                        auth=auth,
                    )
            except _Transient as exc:
                self._metrics.calls.labels(endpoint, exc.reason).inc()
                raise
            finally:
                elapsed = time.perf_counter() - started
                self._metrics.in_flight.dec()
                self._metrics.seconds.labels(endpoint).observe(elapsed)
        self._metrics.calls.labels(endpoint, str(response.status_code)).inc()
        self._read_rate_limit(response)
        log.debug(
            "Genesys Cloud call",
            extra={
                "endpoint": endpoint,
                "status": response.status_code,
                "seconds": round(elapsed, 4),
            },
        )
        return response

    def _checked(self, response: httpx.Response, endpoint: str) -> httpx.Response:
        """The table of answers: a 2xx is returned, "later" raised as `_Transient`, "never"
        as `GenesysApiError`."""
        status = response.status_code
        if 200 <= status < 300:
            return response
        if status == 429:
            wait = _retry_after(response)
            cap = self.options.retry_after_cap_s
            if wait is not None and wait > cap:
                raise RetryableError(
                    f"{endpoint}: rate limited for {wait:g} s (Retry-After), "
                    f"above the cap of {cap:g} s"
                )
            raise _Transient("rate_limited", f"429 {self._summary(response)}", retry_after=wait)
        if status == 408 or (status >= 500 and status != 501):
            raise _Transient("server_error", f"{status} {self._summary(response)}")
        raise self._api_error(response, endpoint)

    def _api_error(self, response: httpx.Response, endpoint: str) -> GenesysApiError:
        body = _json_object(response)
        code = _text(body.get("code")) or _text(body.get("error"))
        context_id = _text(body.get("contextId"))
        text = f"{endpoint}: {response.status_code}"
        if code:
            text += f" {code}"
        text += f": {self._summary(response)}"
        details = [
            ", ".join(f"{k} {v}" for k, v in d.items() if isinstance(v, str | int))
            for d in body.get("details") or []
            if isinstance(d, dict)
        ]
        if details:
            text += f" (details: {'; '.join(details)})"
        if context_id:
            text += f" (contextId {context_id})"
        return GenesysApiError(
            self._scrub(text),
            status=response.status_code,
            code=code,
            context_id=context_id,
            body=body,
        )

    def _summary(self, response: httpx.Response) -> str:
        """What an error answer says, in a line: Genesys's `message` (or OAuth's
        `error_description`), else the start of the body, else the reason phrase."""
        body = _json_object(response)
        for key in ("message", "error_description", "description", "error"):
            if message := _text(body.get(key)):
                return self._scrub(message)
        text = response.text.strip()[:300] if not body else ""
        return self._scrub(text or response.reason_phrase or "no message")

    def _read_rate_limit(self, response: httpx.Response) -> None:
        for header in ("allowed", "count", "reset"):
            value = _header_number(response, f"inin-ratelimit-{header}")
            if value is not None:
                self._metrics.ratelimit.labels(header).set(value)

    def _scrub(self, text: str) -> str:
        """`text` without the secret or any token, even when the redactor has been reset."""
        for secret in (self._secret, *self._tokens_seen):
            text = text.replace(secret, MASK)
        return mask(text)

    # ------------------------------------------------------------ the token

    async def _access_token(self) -> str:
        """The cached token, or a new one when it is due for refresh (one fetch at a time)."""
        async with self._token_lock:
            if self._token is None or self._clock() >= self._token.refresh_at:
                self._token = await self._fetch_token()
            return self._token.value

    def _forget(self, token: str) -> None:
        """A 401 said `token` is no good: the next call fetches another, unless a concurrent
        call has already replaced it."""
        if self._token is not None and self._token.value == token:
            self._token = None

    async def _fetch_token(self) -> _Token:
        endpoint = f"POST {TOKEN}"
        asked_at = self._clock()
        response = await self._send(
            "POST",
            self.login_base_url + TOKEN,
            endpoint,
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(self._client_id, self._secret),
        )
        self._checked(response, endpoint)
        answer = _parse(response, _TokenResponse)
        redact(answer.access_token)
        self._tokens_seen.append(answer.access_token)
        del self._tokens_seen[:-8]  # the live token and its few predecessors
        # Refresh `margin` before expiry; a token shorter-lived than two margins (the
        # simulator's, in tests) is refreshed halfway through its life instead.
        margin = min(self.options.token_refresh_margin_s, answer.expires_in / 2)
        log.info("Genesys Cloud token obtained", extra={"expires_in_s": answer.expires_in})
        return _Token(answer.access_token, asked_at + answer.expires_in - margin)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


def _parse(response: httpx.Response, model: type[M]) -> M:
    """A 2xx body as `model`; an answer of another shape is a `PermanentError`."""
    request = response.request
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['type']}"
            for e in exc.errors(include_input=False)[:5]
        )
        # `from None`: pydantic's own message quotes the input, which may hold a token.
        raise PermanentError(
            f"{request.method} {request.url.path}: unexpected answer from Genesys Cloud "
            f"({response.status_code}; {where})",
            code="genesys_bad_response",
        ) from None
