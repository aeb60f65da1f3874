"""The gateway in front of `/oauth/token` and `/api/…`, as pure ASGI middleware.

For every call it counts (per route and status, in flight, peak in flight) and applies, in
this order: bearer authentication (`/api/…` only; 401), the client's token bucket (429 with
`Retry-After`; `inin-ratelimit-*` on every authenticated answer), the request-size limit
(413), then the faults in force: slow answers, a 429 storm, a burst of 5xx. The admin API
(`/admin/…`) and `/healthz` pass untouched and uncounted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftloop_simulator.errors import error_response
from driftloop_simulator.state import SimulatorState

RouteName = Callable[[Scope], str]


class Gateway:
    def __init__(self, app: ASGIApp, *, state: SimulatorState, route_name: RouteName) -> None:
        self.app = app
        self.state = state
        self.route_name = route_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(("/api/", "/oauth/")):
            await self.app(scope, receive, send)
            return
        stats = self.state.stats
        route = self.route_name(scope)
        status = 500  # what the count says when the app dies before answering

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        stats.enter()
        try:
            await self._gate(scope, receive, counted, api=path.startswith("/api/"))
        finally:
            stats.leave(route, status)

    async def _gate(self, scope: Scope, receive: Receive, send: Send, *, api: bool) -> None:
        state = self.state
        headers = Headers(scope=scope)
        limit_headers: dict[str, str] = {}

        async def answer(response: Response) -> None:
            response.headers.update(limit_headers)
            await response(scope, receive, send)

        if api:
            client_id = self._client_of(headers.get("authorization"))
            if isinstance(client_id, Response):
                await answer(client_id)
                return
            decision = state.limiter.take(client_id, state.now())
            limit_headers = decision.headers
            if not decision.allowed:
                state.stats.rate_limited += 1
                await answer(_too_many(decision.retry_after, state.settings.burst))
                return

        limit = state.settings.max_request_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await answer(_too_large(limit))
            return
        body, complete = await _read_body(receive, limit)
        if not complete:
            await answer(_too_large(limit))
            return

        if api:
            if state.faults.slow_s > 0:
                await asyncio.sleep(state.faults.slow_s)
            retry_after = state.faults.take_storm()
            if retry_after is not None:
                state.stats.faults_injected += 1
                await answer(_too_many(retry_after, state.settings.burst))
                return
            error_status = state.faults.take_error()
            if error_status is not None:
                state.stats.faults_injected += 1
                await answer(error_response(error_status, "Simulated failure (fault injection)"))
                return

        await self.app(scope, _replay(body, receive), _adding(limit_headers, send))

    def _client_of(self, authorization: str | None) -> str | Response:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error_response(
                401,
                "No authentication bearer token specified in authorization header.",
                code="authentication.required",
            )
        client_id = self.state.tokens.client_of(token.strip(), self.state.now())
        if client_id is None:
            return error_response(401, "Invalid login credentials.", code="bad.credentials")
        return client_id


def _too_many(retry_after: int, allowed: int) -> Response:
    return error_response(
        429,
        f"Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds",
        limit={"key": "token.bucket.requests", "namespace": "simulator", "value": allowed},
        headers={"Retry-After": str(retry_after)},
    )


def _too_large(limit: int) -> Response:
    return error_response(413, f"The request body is larger than the limit of {limit} bytes.")


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or (what was read, False) as soon as it exceeds `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True  # client gone; the app sees an empty body
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then wait for the disconnect, as the server would

    return replayed


def _adding(extra: dict[str, str], send: Send) -> Send:
    if not extra:
        return send
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return sending
