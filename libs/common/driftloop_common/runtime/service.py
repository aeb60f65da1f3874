"""Runs one service process: the Kafka loop and its HTTP app on one event loop.

`main()` of every service builds its settings and its `Service` and calls
`run_service(settings, service)`; nothing is
created at import time. SIGTERM/SIGINT stop the loop (finish, commit) and the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import uvicorn
from fastapi import APIRouter
from pydantic import BaseModel, SecretStr

from driftloop_common.contracts.events import Event
from driftloop_common.contracts.topics import dlq
from driftloop_common.runtime.app import ReadyCheck, create_app
from driftloop_common.runtime.kafka import (
    TopicPartition,
    create_topics,
    make_consumer,
    make_producer,
)
from driftloop_common.runtime.logs import configure_logging, redact, uri_passwords
from driftloop_common.runtime.loop import Consumer, DeadLetter, Record, RetryPolicy, ServiceLoop
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import ServiceSettings, load_settings

__all__ = ["Service", "ServiceBase", "build_loop", "load_settings", "run_service", "serve"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `run_service` owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Service(Protocol[T]):
    """What every service is, to the runtime: the topics it reads, how it decodes a record
    and handles it, its metrics, its readiness checks, and the loop's optional hooks
    (`ServiceBase` gives each a neutral default). `run_service(settings, service)` runs it."""

    topics: Sequence[str]
    metrics: LoopMetrics

    def decode(self, record: Record) -> T: ...

    async def handle(self, value: T) -> Sequence[Event]: ...

    async def flush(self) -> Sequence[Event | DeadLetter]: ...

    def flush_due_in(self) -> float | None: ...

    def commit_floor(self, tp: TopicPartition) -> int | None: ...

    async def on_assigned(self, consumer: Consumer, assigned: set[TopicPartition]) -> None: ...

    async def on_revoked(self, revoked: set[TopicPartition]) -> None: ...

    async def on_start(self) -> None: ...

    def ready_checks(self) -> Mapping[str, ReadyCheck]: ...

    def routes(self) -> APIRouter | None: ...


class ServiceBase(Generic[T]):
    """Neutral defaults for a service's optional hooks: nothing buffered, nothing held in
    memory, nothing to wait for, no extra checks or routes."""

    async def flush(self) -> Sequence[Event | DeadLetter]:
        return []

    def flush_due_in(self) -> float | None:
        return None

    def commit_floor(self, tp: TopicPartition) -> int | None:
        return None

    async def on_assigned(self, consumer: Consumer, assigned: set[TopicPartition]) -> None:
        return None

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_start(self) -> None:
        """Runs once logging and redaction are set up, before the loop consumes."""
        return None

    def ready_checks(self) -> Mapping[str, ReadyCheck]:
        return {}

    def routes(self) -> APIRouter | None:
        return None


def build_loop(settings: ServiceSettings, service: Service[Any]) -> ServiceLoop[Any]:
    """The loop with real aiokafka clients, wired to `service`'s hooks."""
    name = settings.service_name
    return ServiceLoop(
        service=name,
        topics=service.topics,
        decode=service.decode,
        handle=service.handle,
        consumer=make_consumer(
            settings.kafka,
            group_id=name,
            client_id=name,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            group_instance_id=settings.group_instance_id,
        ),
        producer=make_producer(settings.kafka, client_id=name),
        metrics=service.metrics,
        retry=RetryPolicy(
            attempts=settings.retry_attempts,
            max_backoff_s=settings.retry_max_backoff_s,
            max_failures=settings.max_handler_failures,
        ),
        track_in_flight=settings.track_in_flight,
        poll_timeout_ms=settings.poll_timeout_ms,
        max_batch_records=settings.max_batch_records,
        flush=service.flush,
        flush_due_in=service.flush_due_in,
        commit_floor=service.commit_floor,
        on_assigned=service.on_assigned,
        on_revoked=service.on_revoked,
        busy_heartbeat_s=settings.busy_heartbeat_s,
    )


async def serve(settings: ServiceSettings, service: Service[Any]) -> None:
    """Run the loop and the HTTP app until SIGTERM/SIGINT or until the loop fails."""
    topics = list(service.topics)
    redact(*all_secrets(settings))
    await service.on_start()
    # What start-up brought (the predictor imports torch, transformers and ONNX Runtime and
    # loads its model here: ~430,000 objects) is frozen too, after its garbage is collected:
    # unfrozen, each full collection of the predictor paused every thread for ~0.3 s.
    gc.collect()
    gc.freeze()
    await create_topics(
        settings.kafka,
        [*topics, *(dlq(t) for t in topics)],
        with_dlq=False,
        dlq_retention_ms=int(settings.dlq_retention_hours * 3600 * 1000),
    )
    loop = build_loop(settings, service)
    app = create_app(
        service=settings.service_name,
        state=loop.state,
        registry=loop.metrics.registry,
        heartbeat_max_age_s=settings.heartbeat_max_age_s,
        ready_checks=service.ready_checks(),
        docs=settings.http_docs,
        routes=service.routes(),
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )

    def shutdown(signum: int) -> None:
        log.info(
            "received %s: finishing the current message, committing, stopping",
            signal.Signals(signum).name,
        )
        loop.stop()

    aio = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        aio.add_signal_handler(sig, shutdown, sig)

    # Bind first: a port in use fails here, before the loop consumes anything.
    sock = server.config.bind_socket()
    # uvicorn binds with protocol 0, so asyncio never sets TCP_NODELAY on the accepted
    # sockets: Nagle held every answer ~40 ms for the client's delayed ACK (uvicorn#3149).
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    http_task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    http_task.add_done_callback(lambda _: loop.stop())  # no HTTP, no service
    log.info(
        "%s consuming %s from %s; HTTP on %s:%s",
        settings.service_name,
        topics,
        settings.kafka.bootstrap_servers,
        settings.http_host,
        settings.http_port,
    )
    try:
        await loop.run()
    finally:
        server.should_exit = True
        await http_task
        for sig in (signal.SIGTERM, signal.SIGINT):
            aio.remove_signal_handler(sig)
        log.info("%s stopped", settings.service_name)


def all_secrets(model: BaseModel) -> list[str]:
    """Every `SecretStr` value anywhere in the settings, and every password written inside
    a URI setting (`http://user:pw@mlflow:5000`), for the log redactor."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found += all_secrets(value)
        elif isinstance(value, str):
            found += uri_passwords(value)
    return found


def run_service(settings: ServiceSettings, service: Service[Any]) -> None:
    """Blocking entry point for a service's `main()`."""
    configure_logging(settings.log_level, json=settings.log_json, service=settings.service_name)
    # What exists now (imported modules, a loaded model: ~500,000 objects in the collector)
    # lives as long as the process. Frozen, the cyclic GC's full collections skip it: one
    # took 0.28 s in the collector, a pause for every thread.
    gc.freeze()
    asyncio.run(serve(settings, service))
