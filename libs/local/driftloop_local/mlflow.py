"""A real MLflow tracking server for local runs and tests: SQLite + a local artifact folder.

`mlflow server` from this environment, bound to 127.0.0.1, with the backend store
`sqlite:///<data_dir>/mlflow.db` and artifacts served through the server (the
`mlflow-artifacts:` proxy) from `<data_dir>/artifacts`, so clients never touch the folder
directly, exactly as they would with a remote server on object storage. Stopped by its pid.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import httpx

from driftloop_local.processes import LocalServer

log = logging.getLogger(__name__)


def server_answers(tracking_uri: str, timeout_s: float = 2.0) -> bool:
    """`GET /health` answers 200 (the tracking server is up and serving)."""
    try:
        return httpx.get(f"{tracking_uri}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class LocalMlflow(LocalServer):
    """One MLflow server on `data_dir` (created on first start, reused afterwards)."""

    label, stem, log_name = "MLflow", "mlflow", "mlflow.log"

    def __init__(self, data_dir: Path, *, port: int | None = None, workers: int = 1) -> None:
        super().__init__(data_dir, port=port)
        self.workers = workers

    @property
    def tracking_uri(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self.port else None

    def start(self, *, timeout_s: float = 120.0) -> str:
        """Start the server and wait for `/health`; returns the tracking URI.

        Starting a server that already runs (same folder) is a no-op.
        """
        if self.pid() is not None and self.tracking_uri and server_answers(self.tracking_uri):
            log.info("MLflow already running on %s", self.tracking_uri)
            return self.tracking_uri
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self._choose_port()
        artifacts = self.data_dir / "artifacts"
        artifacts.mkdir(exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}",
            "--artifacts-destination",
            str(artifacts.resolve()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.workers),
        ]
        # The server's job runners (huey consumers for GenAI jobs) are of no use here and
        # would outlive a stopped server as orphans.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        uri = f"http://127.0.0.1:{port}"
        pid = self._spawn_and_wait(
            cmd, port, lambda: server_answers(uri), timeout_s=timeout_s, env=env
        )
        log.info("MLflow up (pid %s) on %s", pid, uri)
        return uri

    def stop(self, *, timeout_s: float = 20.0) -> bool:
        """SIGTERM the server's process group leader (gunicorn/uvicorn stop their workers)."""
        return super().stop(timeout_s=timeout_s)
