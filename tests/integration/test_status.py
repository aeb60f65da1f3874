"""`driftloop status` on a real MLflow server: the champion and a canary with their test
scores from the registry, the estimate from the rollback-watcher's real metrics, the
served version from the predictor's; a service that does not answer is shown as such."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from mlflow import MlflowClient
from prometheus_client import generate_latest
from rich.console import Console
from typer.testing import CliRunner

from driftloop_cli.main import app
from driftloop_cli.status import collect, render
from driftloop_common.contracts.events import (
    ModelKey,
    ModelPromoted,
    ModelPromotedEvent,
    Prediction,
    PredictionEvent,
)
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag
from driftloop_rollback_watcher.service import WatchMetrics
from driftloop_rollback_watcher.watch import RollbackWatcher, WatchConfig
from tests.integration.helpers import register_versions

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def watcher_metrics(key: ModelKey) -> bytes:
    """The exposition a rollback-watcher shows after v1 went live and 50 predictions."""
    watcher = RollbackWatcher(WatchConfig(min_predictions=40))
    metrics = WatchMetrics(LoopMetrics("rollback-watcher"))
    watcher.apply(
        ModelPromotedEvent(
            producer="promoter",
            model_key=key,
            occurred_at=T0,
            payload=ModelPromoted(
                registered_model=key.registered_model,
                version=1,
                targets=["predictor"],
                confidence_at_promotion=0.9,
                expected_accuracy=0.9,
            ),
        )
    )
    for i in range(50):
        watcher.observe(
            PredictionEvent(
                producer="predictor",
                model_key=key,
                occurred_at=T0 + timedelta(seconds=i + 1),
                payload=Prediction(
                    version=1, label="a", confidence=0.5 + 0.2 * (i % 2), served_by="t"
                ),
            )
        )
    metrics.update(watcher, key)
    return generate_latest(metrics.loop.registry)


def test_status_shows_versions_scores_estimate_and_what_is_served(mlflow_uri: str) -> None:
    key = ModelKey.parse(f"intent/st-{uuid.uuid4().hex[:6]}")
    name = key.registered_model
    client = MlflowClient(mlflow_uri)
    register_versions(client, name, 2)
    for version, f1 in (("1", 0.81), ("2", 0.86)):
        run_id = client.get_model_version(name, version).run_id
        client.log_metric(run_id, "test_macro_f1", f1)  # one run here: the last value wins
    client.set_registered_model_alias(name, registry.CHAMPION, "1")
    client.set_registered_model_alias(name, "canary", "2")
    client.set_model_version_tag(name, "2", Tag.STAGE_SHARE, "15.0")

    exposition = watcher_metrics(key)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8700:
            return httpx.Response(200, content=exposition)
        raise httpx.ConnectError("refused", request=request)  # the predictor is down

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        [status] = [
            s
            for s in collect(client, http, "http://127.0.0.1:8700", "http://127.0.0.1:8800")
            if s.registered_model == name
        ]
    assert [(v.version, v.role, v.share_percent) for v in status.versions] == [
        (1, "champion", None),
        (2, "canary", 15.0),
    ]
    assert status.versions[0].scores["test_macro_f1"] == pytest.approx(0.86)
    assert status.expected_accuracy == pytest.approx(0.6)  # the mean of 0.5 and 0.7
    assert status.window_predictions == 50 and status.reference_accuracy == pytest.approx(0.9)
    assert status.estimate_band is not None  # 0.3 below 0.9: the band was computed
    assert status.rollback_signals == {"confidence": 1, "estimate": 1}  # one request, both
    assert status.predictor_serves is None

    console = Console(record=True, width=160)
    render([status], console)
    shown = console.export_text()
    assert "v2 canary 15 %" in shown and "0.600 over 50 predictions" in shown
    assert "not answering" in shown and "confidence 1, estimate 1" in shown


def test_status_json_for_scripts(mlflow_uri: str) -> None:
    key = ModelKey.parse(f"intent/sj-{uuid.uuid4().hex[:6]}")
    client = MlflowClient(mlflow_uri)
    register_versions(client, key.registered_model, 1)
    client.set_registered_model_alias(key.registered_model, registry.CHAMPION, "1")
    result = CliRunner().invoke(
        app,
        ["status", "--mlflow", mlflow_uri, "--json", "--watcher-url", "http://127.0.0.1:9"],
    )
    assert result.exit_code == 0, result.output
    found = {s["model_key"]: s for s in json.loads(result.output)}
    mine = found[str(key)]
    assert mine["versions"][0]["role"] == "champion" and mine["expected_accuracy"] is None
