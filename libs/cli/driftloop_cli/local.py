"""`driftloop up`: the whole loop as local processes on embedded defaults.

Starts the Kafka broker, creates the topics, starts every service as its own process
(logs in `~/.local/state/driftloop/logs/`), waits until each answers `/healthz` and
`/readyz`, then keeps running until Ctrl-C, and stops what it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from driftloop_common.errors import RetryableError
from driftloop_common.kafka import create_topics
from driftloop_common.local_kafka import LocalKafka, free_port, state_root
from driftloop_common.settings import KafkaSettings

SERVICES: dict[str, str] = {
    "collector": "driftloop_collector.__main__",
    "auditor": "driftloop_auditor.__main__",
    "drift-monitor": "driftloop_drift_monitor.__main__",
}
"""Service name → module with `main()`. Later services register here."""


@dataclass
class RunningService:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_service(name: str, bootstrap: str, logs: Path) -> RunningService:
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{name}.log"
    env = {
        **os.environ,
        "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLOOP_HTTP_PORT": str(port),
        "DRIFTLOOP_SERVICE_NAME": name,
    }
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", SERVICES[name]],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us; we stop the services in order
        )
    return RunningService(name, port, process, log_file)


def wait_ready(services: list[RunningService], timeout_s: float) -> dict[str, dict[str, int]]:
    """Poll every service's probes until all answer 200; raise with the log tail if not."""
    deadline = time.monotonic() + timeout_s
    codes: dict[str, dict[str, int]] = {}
    with httpx.Client(timeout=2.0) as http:
        while True:
            for svc in services:
                if svc.process.poll() is not None:
                    raise RetryableError(
                        f"{svc.name} exited with code {svc.process.returncode}:\n"
                        + _tail(svc.log_file)
                    )
                codes[svc.name] = {
                    path: _probe(http, svc.url + path)
                    for path in ("/healthz", "/readyz", "/metrics")
                }
            if all(c == 200 for probe in codes.values() for c in probe.values()):
                return codes
            if time.monotonic() > deadline:
                lagging = [n for n, p in codes.items() if any(c != 200 for c in p.values())]
                details = "\n".join(
                    f"{n}: {codes[n]}\n{_tail(s.log_file)}"
                    for n in lagging
                    for s in services
                    if s.name == n
                )
                raise RetryableError(f"not ready after {timeout_s:.0f} s: {details}")
            time.sleep(0.5)


def _probe(http: httpx.Client, url: str) -> int:
    try:
        return http.get(url).status_code
    except httpx.HTTPError:
        return 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_service(svc: RunningService, timeout_s: float = 20.0) -> None:
    if svc.process.poll() is None:
        svc.process.send_signal(signal.SIGTERM)
        try:
            svc.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            svc.process.kill()
            svc.process.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_local(
    *,
    port: int | None,
    data_dir: Path | None,
    exit_when_ready: bool,
    console: Console,
    ready_timeout_s: float = 120.0,
) -> int:
    # SIGTERM (systemd, `kill`, a CI runner) stops everything in order, like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    broker = LocalKafka(data_dir, port=port)
    started_broker = broker.pid() is None
    logs = state_root() / "logs"
    services: list[RunningService] = []
    try:
        with console.status("starting Apache Kafka (the first run fetches its jars with Maven)…"):
            bootstrap = broker.start()
        console.print(f"[green]✓[/] Kafka on {bootstrap}  (log {broker.log_file})")
        created = asyncio.run(create_topics(KafkaSettings(bootstrap_servers=bootstrap)))
        console.print(f"[green]✓[/] topics ready ({len(created)} created)")
        for name in SERVICES:
            services.append(start_service(name, bootstrap, logs))
        with console.status("waiting for services to answer /healthz and /readyz…"):
            wait_ready(services, ready_timeout_s)
        for svc in services:
            console.print(
                f"[green]✓[/] {svc.name:<16} {svc.url}/healthz  /readyz  /metrics"
                f"   log {svc.log_file}",
                highlight=False,
            )
        console.print(
            "Try: [bold]driftloop publish retrain --model-type intent --language en-us[/] "
            "then [bold]driftloop tail audit --from-beginning[/]"
        )
        if exit_when_ready:
            return 0
        console.print("Ctrl-C stops everything.")
        while True:
            for svc in services:
                if svc.process.poll() is not None:
                    console.print(
                        f"[red]{svc.name} exited ({svc.process.returncode})[/]:\n"
                        + _tail(svc.log_file)
                    )
                    return 1
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not interrupt the clean-up and orphan services.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with console.status("stopping services…"):
            for svc in services:
                stop_service(svc)
            if started_broker:
                broker.stop()
        console.print("stopped" + (" (Kafka too)" if started_broker else " (Kafka left running)"))
