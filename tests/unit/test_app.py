"""/healthz, /readyz and /metrics answer from the loop's state."""

from __future__ import annotations

import time

from aiokafka import TopicPartition
from fastapi.testclient import TestClient

from driftloop_common.runtime.app import create_app
from driftloop_common.runtime.loop import LoopState
from driftloop_common.runtime.metrics import LoopMetrics


def client(state: LoopState, **kw) -> tuple[TestClient, LoopMetrics]:
    metrics = LoopMetrics("unit-svc")
    app = create_app(service="unit-svc", state=state, registry=metrics.registry, **kw)
    return TestClient(app), metrics


def test_healthz_follows_the_heartbeat() -> None:
    state = LoopState()
    http, _ = client(state, heartbeat_max_age_s=5)
    assert http.get("/healthz").status_code == 503  # never polled yet
    state.heartbeat = time.monotonic()
    assert http.get("/healthz").json()["status"] == "ok"
    state.heartbeat = time.monotonic() - 60
    assert http.get("/healthz").status_code == 503


def test_readyz_needs_group_producer_and_extra_checks() -> None:
    state = LoopState()
    model_loaded = {"value": False}
    http, _ = client(state, ready_checks={"model_loaded": lambda: model_loaded["value"]})
    response = http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "consumer_joined_group": False,
        "producer_started": False,
        "model_loaded": False,
    }
    state.joined_group = state.producer_started = True
    state.assignment = {TopicPartition("audit", 0)}
    assert http.get("/readyz").status_code == 503
    model_loaded["value"] = True
    response = http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["partitions"] == ["audit-0"]


def test_metrics_expose_the_loop_counters() -> None:
    http, metrics = client(LoopState())
    metrics.received.labels("audit").inc(3)
    metrics.processed.labels("audit", "dlq").inc()
    metrics.processing_seconds.labels("audit").observe(0.004)
    body = http.get("/metrics").text
    assert 'driftloop_unit_svc_messages_received_total{topic="audit"} 3.0' in body
    assert 'driftloop_unit_svc_messages_processed_total{status="dlq",topic="audit"} 1.0' in body
    assert 'driftloop_unit_svc_processing_seconds_bucket{le="0.005",topic="audit"} 1.0' in body
    assert 'driftloop_unit_svc_processing_seconds_bucket{le="0.0025",topic="audit"} 0.0' in body


def test_api_docs_are_off_unless_asked_for() -> None:
    http, _ = client(LoopState())
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert http.get(path).status_code == 404
    http, _ = client(LoopState(), docs=True)
    assert http.get("/openapi.json").status_code == 200
