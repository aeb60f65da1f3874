"""Helpers for integration tests on a real broker: produce, read back, run a loop, wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftloop_common.contracts.events import (
    Audit,
    AuditEvent,
    Event,
    ModelKey,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.kafka import create_topics, make_consumer, make_producer
from driftloop_common.runtime.loop import Handler, RetryPolicy, ServiceLoop
from driftloop_common.runtime.settings import KafkaSettings
from driftloop_local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("en-us", "es-es", "fr-fr", "de-de", "pt-br", "it-it", "nl-nl", "ja-jp")


def request(i: int = 0, language: str | None = None) -> TrainingRequestedEvent:
    return TrainingRequestedEvent(
        producer="test",
        model_key=ModelKey(model_type="intent", language=language or LANGUAGES[i % 8]),
        payload=TrainingRequested(reason=TrainingReason.MANUAL, requested_by="test", note=str(i)),
    )


def audit_of(event: Event) -> list[Event]:
    return [
        event.follow_up(
            AuditEvent,
            producer="test",
            payload=Audit(action=event.event_type, actor="t", subject="s"),
        )
    ]


async def make_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    await create_topics(KafkaSettings(bootstrap_servers=bootstrap), names, partitions=partitions)


async def produce(bootstrap: str, topic: str, values: Sequence[bytes | Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            if isinstance(value, Event):
                await producer.send_and_wait(topic, value.to_bytes(), key=value.key)
            else:
                await producer.send_and_wait(topic, value, key=b"intent/en-us")
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 60) -> list[Any]:
    """Read `topic` from the beginning until `expect` records arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def real_loop(
    bootstrap: str,
    *,
    topics: Sequence[str],
    group: str,
    handle: Handler[Event],
    out_topic: str,
    name: str = "test",
    retry: RetryPolicy | None = None,
) -> ServiceLoop[Event]:
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    return ServiceLoop(
        service=name,
        topics=topics,
        decode=lambda record: decode_event(record.value or b""),
        handle=handle,
        consumer=make_consumer(settings, group_id=group, client_id=name),
        producer=make_producer(settings, client_id=name),
        retry=retry or RetryPolicy(attempts=5, initial_backoff_s=0.2, max_backoff_s=2),
        poll_timeout_ms=200,
        route=lambda event: out_topic,
    )


@contextlib.asynccontextmanager
async def running(loop: ServiceLoop[Any]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)  # a loop that crashed fails the test here


def register_versions(
    client: Any, name: str, count: int, params: dict[str, str] | None = None
) -> None:
    """A registered model `name` with `count` versions of one run (logging `params`): what a
    promotion needs of MLflow, without training anything."""
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name))
    for param, value in (params or {}).items():
        client.log_param(run.info.run_id, param, value)
    for _ in range(count):
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)


@contextlib.asynccontextmanager
async def hang_guard(timeout_s: float, explain: Callable[[], str]) -> AsyncIterator[None]:
    """Fail with `explain()` if the block hangs: a guard against a test waiting forever,
    not a statement about speed."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        pytest.fail(f"still waiting after {timeout_s} s: {explain()}")


class ServiceProcess:
    """One driftloop service as its own process (`python -m <module>`), logs to a file."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module, self.log, self.port = module, log, free_port()
        self.env = {
            **os.environ,
            "DRIFTLOOP_HTTP_PORT": str(self.port),
            "DRIFTLOOP_POLL_TIMEOUT_MS": "200",
            "DRIFTLOOP_LOG_JSON": "false",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def start(self, timeout_s: float = 120) -> None:
        self._assigned_before = self._assignments()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"{self.module} exited:\n{self.log_tail()}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url("/readyz"))).status_code == 200:
                        return
                await asyncio.sleep(0.3)
        raise AssertionError(f"{self.module} never became ready:\n{self.log_tail()}")

    def _assignments(self) -> int:
        return (
            self.log.read_text(errors="replace").count("partitions assigned")
            if self.log.exists()
            else 0
        )

    async def assigned(self, timeout_s: float = 60) -> None:
        """Wait until this run of the service holds its partitions: one reading from
        `latest` misses what is produced before that."""
        async with hang_guard(
            timeout_s, lambda: f"{self.module} got no partitions:\n{self.log_tail()}"
        ):
            while self._assignments() <= self._assigned_before:
                await asyncio.sleep(0.2)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            await asyncio.to_thread(self.proc.wait, 60)


async def events_until(
    bootstrap: str,
    topic: str,
    found: Callable[[list[Event]], bool],
    *,
    timeout_s: float,
    keep: Callable[[Event], bool] = lambda event: True,
    on_timeout: Callable[[], str] = lambda: "",
) -> list[Event]:
    """Read `topic` from the start, decoding events that `keep` accepts, until `found`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    events: list[Event] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not found(events):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s on {topic}; got {len(events)} event(s)\n"
                    + on_timeout()
                )
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = decode_event(record.value or b"")
                    if keep(event):
                        events.append(event)
        return events
    finally:
        await consumer.stop()
