"""`MlflowBaselineSource` on a real MLflow server: "no baseline" is None, "cannot ask" raises.

A small proxy in front of the server answers 503 for chosen paths, as a load balancer does
while MLflow restarts. A 503 must never read as "no champion": the drift-monitor would
bootstrap a baseline from the stream while the champion exists.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from driftloop_common.contracts.errors import RetryableError
from driftloop_common.contracts.events import ModelKey
from driftloop_common.ml.drift.baseline import ARTIFACT_PATH, build_baseline
from driftloop_common.storage import registry
from driftloop_drift_monitor.baselines import MlflowBaselineSource
from driftloop_local.processes import free_port
from tests.unit.drift_data import ENCODER, Traffic

pytestmark = pytest.mark.integration


class Proxy:
    """Forwards to MLflow; answers 503 for paths starting with one of `failing`."""

    def __init__(self, upstream: str) -> None:
        self.failing: tuple[str, ...] = ()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if self.path.startswith(proxy.failing) and proxy.failing:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                request = urllib.request.Request(
                    upstream + self.path,
                    data=self.rfile.read(length) if length else None,
                    method=self.command,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, headers, body = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as error:
                    status, headers, body = error.code, error.headers, error.read()
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not in 2 min
    p = Proxy(mlflow_uri)
    try:
        yield p
    finally:
        p.close()


def fresh_key() -> ModelKey:
    return ModelKey.parse(f"intent/xm-{uuid.uuid4().hex[:8]}")


def register(uri: str, key: ModelKey, tmp_path: Path, *, baseline: bool, alias: bool) -> None:
    client = registry.client(uri)
    name = key.registered_model
    client.create_registered_model(name)
    run = client.create_run(registry.ensure_experiment(client, name))
    if baseline:
        x, labels = Traffic(seed=1).sample(2000, np.random.default_rng(0))
        folder = build_baseline(x, encoder=ENCODER, labels=labels).save(tmp_path / ARTIFACT_PATH)
        client.log_artifacts(run.info.run_id, str(folder), ARTIFACT_PATH)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(
        name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    if alias:
        client.set_registered_model_alias(name, registry.CHAMPION, version.version)


def test_a_champion_baseline_loads_and_only_a_missing_one_answers_none(
    mlflow_uri: str, tmp_path: Path
) -> None:
    source = MlflowBaselineSource(mlflow_uri)
    assert source.load(fresh_key()) is None  # no registered model

    no_alias = fresh_key()
    register(mlflow_uri, no_alias, tmp_path / "a", baseline=True, alias=False)
    assert source.load(no_alias) is None

    no_artifact = fresh_key()
    register(mlflow_uri, no_artifact, tmp_path / "b", baseline=False, alias=True)
    assert source.load(no_artifact) is None

    champion = fresh_key()
    register(mlflow_uri, champion, tmp_path / "c", baseline=True, alias=True)
    loaded = source.load(champion)
    assert loaded is not None
    assert loaded.source == f"{champion.registered_model} v1"


def test_a_503_or_a_refused_connection_raises_retryable_and_never_answers_none(
    mlflow_uri: str, proxy: Proxy, tmp_path: Path
) -> None:
    key = fresh_key()
    register(mlflow_uri, key, tmp_path, baseline=True, alias=True)
    source = MlflowBaselineSource(f"http://driftloop:s3cret-pw@127.0.0.1:{proxy.port}")
    assert source.load(key) is not None  # through the proxy while it forwards everything

    proxy.failing = ("/api/2.0/mlflow/registered-models/alias",)
    with pytest.raises(RetryableError) as alias_error:
        source.load(key)
    # The artifact store's 503: MLflow's `download_artifacts` alone reports it as
    # RESOURCE_DOES_NOT_EXIST ("no such artifact"), which read as "no baseline" before.
    proxy.failing = ("/api/2.0/mlflow-artifacts/",)
    with pytest.raises(RetryableError) as artifact_error:
        source.load(key)
    for error in (alias_error, artifact_error):
        assert "s3cret-pw" not in str(error.value)

    refused = MlflowBaselineSource(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableError):
        refused.load(key)

    proxy.failing = ()
    assert source.load(key) is not None  # back: the champion's baseline again
