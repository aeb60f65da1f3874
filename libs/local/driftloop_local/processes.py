"""Process and port helpers for the local runners: start, find and stop what `driftloop up` runs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from driftloop_common.contracts.errors import ConfigError, RetryableError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def terminate(pid: int, name: str, *, timeout_s: float = 30.0) -> None:
    """SIGTERM `pid` and wait for it to exit; SIGKILL it after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):  # it may have just exited
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    if pid_alive(pid):
        log.warning("%s (pid %s) ignored SIGTERM for %.0f s; killing it", name, pid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


class LocalServer:
    """A server this machine runs for local work, known by its data folder, which holds
    `<stem>.pid`, `<stem>.port` and its log: a later command finds it there (`pid`, `port`),
    waits for it to answer (`_spawn_and_wait`) and stops it (`stop`)."""

    label = "server"  # in messages: "Kafka", "MLflow"
    stem = "server"  # file names: `kafka.pid`, `kafka.port`
    log_name = "server.log"

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._requested_port = port

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.stem}.pid"

    @property
    def port_file(self) -> Path:
        return self.data_dir / f"{self.stem}.port"

    @property
    def log_file(self) -> Path:
        return self.data_dir / self.log_name

    @property
    def port(self) -> int | None:
        try:
            return int(self.port_file.read_text())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        """The server's pid, if it runs (a recycled pid that is not ours is not)."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and self._owns(pid) else None

    def _owns(self, pid: int) -> bool:
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no {self.label} log)"

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """SIGTERM the server (a clean shutdown), SIGKILL it after `timeout_s`."""
        pid = self.pid()
        if pid is not None:
            terminate(pid, self.label, timeout_s=timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None

    def _choose_port(self) -> int:
        if self._requested_port:
            if not port_is_free(self._requested_port):
                raise ConfigError(f"port {self._requested_port} on 127.0.0.1 is already in use")
            return self._requested_port
        previous = self.port  # keep the address stable across restarts when possible
        if previous and port_is_free(previous):
            return previous
        return free_port()

    def _spawn_and_wait(
        self,
        cmd: list[str],
        port: int,
        answers: Callable[[], bool],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start `cmd` in its own session (a Ctrl-C in the terminal does not kill it
        mid-write), logging to `log_file`, and wait until `answers()`; returns its pid."""
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        self.port_file.write_text(str(port))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RetryableError(
                    f"{self.label} exited with code {proc.returncode} during start-up; "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            if answers():
                return proc.pid
            time.sleep(0.5)
        self.stop()
        raise RetryableError(
            f"{self.label} did not answer on port {port} within {timeout_s:.0f} s; "
            f"log {self.log_file}:\n{self.log_tail()}"
        )
