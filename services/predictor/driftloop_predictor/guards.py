"""What every HTTP route of the predictor shares: the bearer token (constant-time
compare), the body limit, the model lookup, and errors answered as `{"error": …}`."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from driftloop_predictor.models import Loaded, ServedModels

__all__ = ["ErrorRoute", "Guards", "OipError", "OipLimits", "add_versioned_routes"]


class OipError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class ErrorRoute(APIRoute):
    """Answers an `OipError` as the protocol's `{"error": …}` body."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except OipError as exc:
                return JSONResponse(
                    {"error": exc.message}, status_code=exc.status, headers=exc.headers
                )

        return route


@dataclass(frozen=True)
class OipLimits:
    max_body_bytes: int
    max_batch: int
    api_token: str | None = field(default=None, repr=False)  # never in a log line


class Guards:
    def __init__(self, models: ServedModels, limits: OipLimits) -> None:
        self.models = models
        self.limits = limits
        self._token = limits.api_token.encode() if limits.api_token else None

    def authorize(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            raise OipError(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def model(self, name: str, conversation_id: str | None = None) -> Loaded:
        """The version that answers `name` (a canary answers its share of conversations)."""
        if self.models.key_of(name) is None:
            served = sorted(self.models.keys)
            raise OipError(404, f"no model {name!r} here; served: {served}")
        loaded = self.models.live(name, conversation_id)
        if loaded is None:
            raise OipError(503, f"model {name!r} is not loaded yet")
        return loaded

    async def read(self, request: Request) -> bytes:
        """The body, refused (413) as soon as it passes `max_body_bytes`."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise OipError(413, f"the body is larger than {limit} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise OipError(413, f"the body is larger than {limit} bytes")
        return bytes(raw)


Handle = Callable[[Request, str, int | None], Awaitable[Response]]


def add_versioned_routes(router: APIRouter, action: str, handle: Handle) -> None:
    """`POST /v2/models/{name}/<action>` (version None: whatever answers now) and
    `POST /v2/models/{name}/versions/{version}/<action>` (that version, 400 if not a number)."""

    async def live(request: Request, name: str) -> Response:
        return await handle(request, name, None)

    async def versioned(request: Request, name: str, version: str) -> Response:
        if not version.isdigit():
            raise OipError(400, f"a version is a positive integer, not {version!r}")
        return await handle(request, name, int(version))

    router.add_api_route(f"/v2/models/{{name}}/{action}", live, methods=["POST"], name=action)
    router.add_api_route(
        f"/v2/models/{{name}}/versions/{{version}}/{action}",
        versioned,
        methods=["POST"],
        name=f"{action}_version",
    )
