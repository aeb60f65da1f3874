"""`create_app(settings)`: the Genesys Cloud simulator as one FastAPI app on one host.

It serves what driftloop calls on Genesys Cloud, behaving like the real thing so the client
is exercised for real:

- `POST /oauth/token`: client credentials (HTTP Basic + `grant_type=client_credentials`),
  tokens that expire after `token_ttl_s`; a wrong secret answers 401 in OAuth's error shape;
- the NLU domain API under `/api/v2/languageunderstanding/domains` (Genesys's public API):
  versions with `NluDomainVersion`'s fields, train / report / detect / publish, paging;
- the model-config API (`/api/v2/ml/trainingdata`, `/api/v2/ml/models/{modelId}`): the
  contract of the integration guide this project started from, **not** Genesys's public API,
  which has no such endpoints;
- limits and faults (see `gateway`): bearer auth, a token bucket per client, a size limit,
  Genesys-style error bodies, and faults switched through `/admin/faults`;
- `/admin/…` (faults, stats, seeding) and `/healthz`, which are not Genesys.

State lives in memory and dies with the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from driftloop_simulator.errors import ApiError, error_response
from driftloop_simulator.gateway import Gateway
from driftloop_simulator.routes import (
    admin_routes,
    health_routes,
    ml_routes,
    nlu_routes,
    oauth_routes,
)
from driftloop_simulator.settings import SimulatorSettings, load_settings
from driftloop_simulator.state import Clock, SimulatorState


def create_app(settings: SimulatorSettings, *, clock: Clock = time.time) -> FastAPI:
    """The app; `clock` (seconds since the epoch) drives token expiry, the rate limit and
    training, so tests can move time by hand. The state is at `app.state.simulator`."""
    state = SimulatorState(settings, clock)
    app = FastAPI(
        title="driftloop Genesys Cloud simulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.simulator = state
    routers = [
        oauth_routes(state),
        nlu_routes(state),
        ml_routes(state),
        admin_routes(state),
        health_routes(),
    ]
    for router in routers:
        app.include_router(router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "errorCode": str(err.get("type", "invalid")),
                "fieldName": ".".join(str(p) for p in err.get("loc", ())[1:]) or None,
                "message": str(err.get("msg", "")),
            }
            for err in exc.errors()
        ]
        first = details[0] if details else {}
        message = "The request could not be understood by the server due to malformed syntax"
        if first:
            message += f": {first.get('fieldName') or 'body'}: {first.get('message')}"
        return error_response(400, message, details=[_compact(d) for d in details])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    app.add_middleware(Gateway, state=state, route_name=_route_namer(routers))
    return app


def _compact(detail: dict[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in detail.items() if v is not None}


def _route_namer(routers: list[APIRouter]) -> Callable[[Scope], str]:
    """`METHOD /path/{template}` of the route a request goes to, for the stats."""
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]

    def name(scope: Scope) -> str:
        partial = None
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return f"{scope['method']} {route.path}"
            if match is Match.PARTIAL and partial is None:
                partial = f"{scope['method']} {route.path}"
        return partial or f"{scope['method']} (no route)"

    return name


def serve(
    settings: SimulatorSettings | None = None, *, host: str | None = None, port: int | None = None
) -> None:
    """Run the simulator with uvicorn in the foreground until Ctrl-C."""
    import uvicorn

    settings = settings or load_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=settings.port if port is None else port,
        log_level="info",
    )
