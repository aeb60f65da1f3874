"""The HTTP face of a service: `/healthz`, `/readyz` and `/metrics`.

`/healthz` answers 200 while the loop's heartbeat is fresh (a wedged loop gets the pod
restarted); `/readyz` answers 200 once the consumer joined its group, the producer is
started and every extra check (e.g. "model loaded") passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from driftloop_common.runtime.loop import LoopState

ReadyCheck = Callable[[], bool]


def create_app(
    *,
    service: str,
    state: LoopState,
    registry: CollectorRegistry,
    heartbeat_max_age_s: float = 30.0,
    ready_checks: Mapping[str, ReadyCheck] | None = None,
    version: str = "0.1.0",
    docs: bool = False,
    routes: APIRouter | None = None,
) -> FastAPI:
    """The app; `docs` serves FastAPI's `/docs`, `/redoc` and `/openapi.json` (off by
    default: they describe every route to whoever can reach the port)."""
    app = FastAPI(
        title=f"driftloop {service}",
        version=version,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    extra_checks = dict(ready_checks or {})

    @app.get("/healthz", summary="Liveness: the service loop is polling Kafka")
    def healthz() -> JSONResponse:
        age = state.heartbeat_age()
        healthy = age <= heartbeat_max_age_s and not state.stopped
        body = {
            "status": "ok" if healthy else "stale",
            "service": service,
            "heartbeat_age_s": round(age, 3) if age != float("inf") else None,
            "max_age_s": heartbeat_max_age_s,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/readyz", summary="Readiness: group joined, producer started, model loaded")
    def readyz() -> JSONResponse:
        checks = {
            "consumer_joined_group": state.joined_group,
            "producer_started": state.producer_started,
        }
        for name, check in extra_checks.items():
            try:
                checks[name] = bool(check())
            except Exception:
                checks[name] = False
        ready = all(checks.values()) and not state.stopped
        body = {
            "status": "ready" if ready else "not ready",
            "service": service,
            "checks": checks,
            "partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in state.assignment),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics (explicit registry)")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if routes is not None:
        app.include_router(routes)  # a service's own routes (the predictor's /predict)

    return app
