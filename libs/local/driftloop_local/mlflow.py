"""A real MLflow tracking server for local runs and tests: SQLite + a local artifact folder.

`mlflow server` from this environment, bound to 127.0.0.1, with the backend store
`sqlite:///<data_dir>/mlflow.db` and artifacts served through the server (the
`mlflow-artifacts:` proxy) from `<data_dir>/artifacts`, so clients never touch the folder
directly, exactly as they would with a remote server on object storage. Stopped by its pid.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from driftloop_common.contracts.errors import ConfigError, RetryableError
from driftloop_local.processes import free_port, pid_alive, port_is_free, terminate

log = logging.getLogger(__name__)


def server_answers(tracking_uri: str, timeout_s: float = 2.0) -> bool:
    """`GET /health` answers 200 (the tracking server is up and serving)."""
    try:
        return httpx.get(f"{tracking_uri}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class LocalMlflow:
    """One MLflow server on `data_dir` (created on first start, reused afterwards)."""

    def __init__(self, data_dir: Path, *, port: int | None = None, workers: int = 1) -> None:
        self.data_dir = Path(data_dir)
        self._requested_port = port
        self.workers = workers

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "mlflow.pid"

    @property
    def port_file(self) -> Path:
        return self.data_dir / "mlflow.port"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "mlflow.log"

    @property
    def tracking_uri(self) -> str | None:
        try:
            return f"http://127.0.0.1:{int(self.port_file.read_text())}"
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no MLflow log)"

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
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,  # a Ctrl-C in the terminal does not kill it mid-write
            )
        self.pid_file.write_text(str(proc.pid))
        self.port_file.write_text(str(port))
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RetryableError(
                    f"MLflow exited with code {proc.returncode} during start-up; "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            if server_answers(uri):
                log.info("MLflow up (pid %s) on %s", proc.pid, uri)
                return uri
            time.sleep(0.5)
        self.stop()
        raise RetryableError(
            f"MLflow did not answer on {uri} within {timeout_s:.0f} s; "
            f"log {self.log_file}:\n{self.log_tail()}"
        )

    def stop(self, *, timeout_s: float = 20.0) -> bool:
        """SIGTERM the server's process group leader (gunicorn/uvicorn stop their workers)."""
        pid = self.pid()
        if pid is not None:
            terminate(pid, "MLflow", timeout_s=timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None

    def _choose_port(self) -> int:
        if self._requested_port:
            if not port_is_free(self._requested_port):
                raise ConfigError(f"port {self._requested_port} on 127.0.0.1 is already in use")
            return self._requested_port
        previous = self.tracking_uri  # keep the address stable across restarts when possible
        if previous and port_is_free(int(previous.rsplit(":", 1)[1])):
            return int(previous.rsplit(":", 1)[1])
        return free_port()
