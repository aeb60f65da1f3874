"""`driftloop up`: the whole loop as local processes on embedded defaults.

Starts the Kafka broker and an MLflow server (SQLite + local artifacts), creates the
topics, starts every service as its own process (logs in `~/.local/state/driftloop/logs/`),
waits until each answers `/healthz` and `/readyz`, then keeps running until Ctrl-C, and
stops what it started. The demo first backfills 100 days of embedded history into the
interaction store (once), so a drift can lead to a real training and evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console

from driftloop_cli.generate import publish_records
from driftloop_common.contracts import topics
from driftloop_common.contracts.describe import describe as describe_event
from driftloop_common.contracts.errors import DriftloopError, RetryableError
from driftloop_common.contracts.events import decode_event
from driftloop_common.runtime.kafka import create_topics, follow
from driftloop_common.runtime.settings import KafkaSettings, default_store_url, state_root
from driftloop_local.kafka import LocalKafka
from driftloop_local.mlflow import LocalMlflow
from driftloop_local.processes import free_port
from driftloop_synthetic import (
    DriftSpec,
    GeneratorConfig,
    OutputFormat,
    generate,
    kafka_records,
)

SERVICES: dict[str, str] = {
    "collector": "driftloop_collector.__main__",
    "auditor": "driftloop_auditor.__main__",
    "drift-monitor": "driftloop_drift_monitor.__main__",
    "trainer": "driftloop_trainer.__main__",
    "evaluator": "driftloop_evaluator.__main__",
    "promoter": "driftloop_promoter.__main__",
    "rollback-watcher": "driftloop_rollback_watcher.__main__",
    "predictor": "driftloop_predictor.__main__",
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


LOCAL_DEFAULTS = {
    # Every service of a local run shares one interaction store; a small bootstrap lets
    # the drift-monitor judge drift before any champion exists.
    "DRIFTLOOP_STORE_URL": default_store_url(),
    "DRIFTLOOP_BOOTSTRAP_ROWS": "2000",
}


def start_service(
    name: str, bootstrap: str, logs: Path, extra_env: dict[str, str] | None = None
) -> RunningService:
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{name}.log"
    env = {
        **LOCAL_DEFAULTS,
        **(extra_env or {}),
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


READY_LATER = {"predictor"}
"""Services that become ready only later in a run: the predictor once a first champion is
promoted (it starts before there is one). `wait_ready` waits for their liveness only."""


def _waiting(name: str, probes: dict[str, int]) -> bool:
    later = name in READY_LATER
    return any(c != 200 for path, c in probes.items() if not (later and path == "/readyz"))


def wait_ready(services: list[RunningService], timeout_s: float) -> dict[str, dict[str, int]]:
    """Poll every service's probes until all answer 200 (`READY_LATER` ones: all but
    `/readyz`); raise with the log tail if not."""
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

            if not any(_waiting(name, probe) for name, probe in codes.items()):
                return codes
            if time.monotonic() > deadline:
                lagging = [n for n, probe in codes.items() if _waiting(n, probe)]
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


def demo_config(now: datetime) -> GeneratorConfig:
    """Six days of traffic; from day four on, a product launch shifts the intent mix."""
    start = now - timedelta(days=6)
    return GeneratorConfig(
        seed=7,
        count=6000,
        start=start,
        end=now,
        spanish_share=0.3,
        drift=(
            DriftSpec(
                at=start + timedelta(days=4),
                intent_weights={"cancel_order": 0.3, "refund": 0.25, "delivery_status": 0.2},
                product="Zephyr One",
                product_share=0.3,
            ),
        ),
    )


HISTORY_DAYS = 100


def backfill_history(store_url: str, now: datetime, console: Console) -> None:
    """100 days of everyday traffic before the demo's six days, embedded into the store,
    once: the trainer's split needs 90 days of labelled history."""
    from driftloop_cli.backfill import backfill_store
    from driftloop_common.ml.encoder import TextEncoder
    from driftloop_common.storage.interactions import InteractionStore

    store = InteractionStore(store_url)
    demo_start = demo_config(now).start
    if store.oldest("en-us", 1, columns=["completed_at"]).num_rows:
        console.print(f"[green]✓[/] history already in the store ({store_url})")
        return
    config = GeneratorConfig(
        seed=11,
        count=HISTORY_DAYS * 40,
        start=demo_start - timedelta(days=HISTORY_DAYS),
        end=demo_start,
        spanish_share=0.3,
    )
    with console.status(
        f"embedding {config.count} interactions of history into {store_url} (once)…"
    ):
        written = backfill_store(store, generate(config), TextEncoder().load())
    console.print(f"[green]✓[/] {written} interactions of history in the store")


def replay_demo(bootstrap: str, console: Console) -> None:
    """Stream the demo traffic into `interactions.raw` as Genesys events."""
    config = demo_config(datetime.now(UTC))
    records = list(
        kafka_records(
            generate(config), OutputFormat.GENESYS_EVENTBRIDGE, shuffle_window=20, seed=config.seed
        )
    )
    console.print(
        f"[bold]demo:[/] replaying {config.count} conversations ({len(records)} Genesys events) "
        "over 6 days of event time; from day 4 a product launch shifts the intent mix"
    )
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    publish_records(records, settings, topics.INTERACTIONS_RAW, None, on_acked=lambda: None)
    console.print("[bold]demo:[/] replayed; the collector embeds, the drift-monitor decides…")


class LapWatcher(threading.Thread):
    """Prints each decision of the loop as it lands on Kafka."""

    WATCHED = (
        topics.DRIFT_DETECTED,
        topics.TRAINING_REQUESTED,
        topics.MODEL_TRAINED,
        topics.TRAINING_FAILED,
        topics.MODEL_EVALUATED,
        topics.MODEL_PROMOTED,
        topics.PROMOTION_FAILED,
        topics.MODEL_ROLLED_BACK,
    )

    def __init__(self, bootstrap: str, console: Console) -> None:
        super().__init__(daemon=True, name="lap-watcher")
        self.bootstrap, self.console = bootstrap, console
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    def run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        settings = KafkaSettings(bootstrap_servers=self.bootstrap)
        batches = follow(settings, self.WATCHED, client_id="lap-watcher")
        async with contextlib.aclosing(batches) as polls:
            async for batch in polls:
                if self._stopping.is_set():
                    return
                for record in batch:
                    self.console.print(describe(record.value or b""), highlight=False)


def describe(raw: bytes) -> str:
    """One line for a person, stamped with the event's time (`contracts.describe`)."""
    try:
        event = decode_event(raw)
    except DriftloopError:
        return "(an event this version cannot read)"
    return f"[{event.occurred_at:%Y-%m-%d %H:%M}] {describe_event(event)}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_local(
    *,
    port: int | None,
    data_dir: Path | None,
    exit_when_ready: bool,
    console: Console,
    demo: bool = True,
    ready_timeout_s: float = 120.0,
) -> int:
    # SIGTERM (systemd, `kill`, a CI runner) stops everything in order, like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    broker = LocalKafka(data_dir, port=port)
    started_broker = broker.pid() is None
    mlflow_server = LocalMlflow(state_root() / "mlflow")
    started_mlflow = mlflow_server.pid() is None
    logs = state_root() / "logs"
    services: list[RunningService] = []
    watcher: LapWatcher | None = None
    try:
        with console.status("starting Apache Kafka (the first run fetches its jars with Maven)…"):
            bootstrap = broker.start()
        console.print(f"[green]✓[/] Kafka on {bootstrap}  (log {broker.log_file})")
        created = asyncio.run(create_topics(KafkaSettings(bootstrap_servers=bootstrap)))
        console.print(f"[green]✓[/] topics ready ({len(created)} created)")
        with console.status("starting MLflow (SQLite + local artifacts)…"):
            tracking_uri = mlflow_server.start()
        console.print(f"[green]✓[/] MLflow on {tracking_uri}  (log {mlflow_server.log_file})")
        if demo and not exit_when_ready:
            backfill_history(
                os.environ.get("DRIFTLOOP_STORE_URL", LOCAL_DEFAULTS["DRIFTLOOP_STORE_URL"]),
                datetime.now(UTC),
                console,
            )
        mlflow_env = {"DRIFTLOOP_MLFLOW__TRACKING_URI": tracking_uri}
        for name in SERVICES:
            services.append(start_service(name, bootstrap, logs, mlflow_env))
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
        watcher = LapWatcher(bootstrap, console)
        watcher.start()
        if demo:
            replay_demo(bootstrap, console)
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
        if watcher is not None:
            watcher.stop()
        with console.status("stopping services…"):
            for svc in services:
                stop_service(svc)
            if started_mlflow:
                mlflow_server.stop()
            if started_broker:
                broker.stop()
        console.print("stopped" + (" (Kafka too)" if started_broker else " (Kafka left running)"))
