"""Small blocking helpers the CLI uses to talk to Kafka (one producer or consumer per call)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer

from driftloop_common.contracts.events import Event
from driftloop_common.runtime.kafka import follow, kafka_errors, make_producer
from driftloop_common.runtime.settings import KafkaSettings
from driftloop_local.kafka import LocalKafka

BOOTSTRAP_ENV = "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS"

BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        help=f"Kafka bootstrap servers. Default: ${BOOTSTRAP_ENV}, "
        "else the local broker if running, else 127.0.0.1:9092.",
        show_default=False,
    ),
]
"""The `--bootstrap` option every command that talks to Kafka takes (see `resolve_bootstrap`)."""


def resolve_bootstrap(explicit: str | None) -> str:
    """`--bootstrap`, else the environment, else the local broker if one runs, else :9092."""
    if explicit:
        return explicit
    if env := os.environ.get(BOOTSTRAP_ENV):
        return env
    status = LocalKafka().status()
    return status.bootstrap if status.running and status.bootstrap else "127.0.0.1:9092"


def kafka_settings(bootstrap: str) -> KafkaSettings:
    """Kafka settings from the environment (security etc.) with the chosen bootstrap."""
    from driftloop_common.runtime.settings import ServiceSettings

    return ServiceSettings().kafka.model_copy(update={"bootstrap_servers": bootstrap})


def publish(settings: KafkaSettings, event: Event) -> tuple[int, int]:
    """Send one event to its topic and wait for the broker's ack; return (partition, offset)."""

    async def send() -> tuple[int, int]:
        producer = make_producer(settings, client_id="cli")
        try:
            with kafka_errors(f"could not publish to {event.topic}", settings):
                await asyncio.wait_for(producer.start(), 30)
                meta = await producer.send_and_wait(event.topic, event.to_bytes(), key=event.key)
            return meta.partition, meta.offset
        finally:
            await producer.stop()

    return asyncio.run(send())


@dataclass
class TailedMessage:
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: str | None
    value: str
    headers: dict[str, str]

    def as_json(self) -> str:
        try:
            value: object = json.loads(self.value)
        except ValueError:
            value = self.value
        return json.dumps(
            {
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "timestamp": self.timestamp.isoformat(),
                "key": self.key,
                "headers": self.headers,
                "value": value,
            }
        )


def tail(
    settings: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout_s: float | None,
    on_message: Callable[[TailedMessage], None],
) -> int:
    """Read `topic` without a consumer group (nothing is committed); return how many were read."""

    async def run() -> int:
        seen = 0
        if max_messages is not None and max_messages <= 0:
            return seen
        idle_since = asyncio.get_running_loop().time()
        batches = follow(settings, [topic], client_id="tail", from_beginning=from_beginning)
        async with contextlib.aclosing(batches) as polls:
            async for batch in polls:
                now = asyncio.get_running_loop().time()
                if not batch:
                    if idle_timeout_s is not None and now - idle_since >= idle_timeout_s:
                        break
                    continue
                idle_since = now
                for r in batch:
                    on_message(
                        TailedMessage(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            timestamp=datetime.fromtimestamp(r.timestamp / 1000, UTC),
                            key=r.key.decode(errors="replace") if r.key else None,
                            value=(r.value or b"").decode(errors="replace"),
                            headers={k: v.decode(errors="replace") for k, v in r.headers},
                        )
                    )
                    seen += 1
                    if max_messages is not None and seen >= max_messages:
                        return seen
        return seen

    return asyncio.run(run())
