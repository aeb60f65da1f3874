"""The Kafka adapter: aiokafka clients built from `KafkaSettings`, errors translated.

Only this module and the service loop import aiokafka; everything else sees
`RetryableError` / `PermanentError` from `driftloop_common.contracts.errors`, and names
partitions and records by the types re-exported here. `kafka_errors` is the one place
Kafka's errors become ours; `read_since` (history replay) and `follow` (tailing) read
topics without a consumer group for whoever needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from driftloop_common.contracts.errors import ConfigError, PermanentError, RetryableError
from driftloop_common.contracts.events import Event, decode_event
from driftloop_common.contracts.topics import ALL_TOPICS, DLQ_SUFFIX, TOPIC_CONFIGS, dlq
from driftloop_common.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)

__all__ = [
    "ConsumerRecord",
    "TopicPartition",
    "cluster_answers",
    "create_topics",
    "events_since",
    "follow",
    "kafka_errors",
    "make_consumer",
    "make_producer",
    "read_since",
]


@contextlib.contextmanager
def kafka_errors(doing: str, settings: KafkaSettings) -> Iterator[None]:
    """Kafka's errors, and a client that timed out, as `RetryableError` naming what failed:
    the broker or the network may come back."""
    try:
        yield
    except (KafkaError, TimeoutError) as exc:
        raise RetryableError(f"{doing} ({settings.bootstrap_servers}): {exc!r}") from exc


PRODUCER_BATCH_BYTES = 512 * 1024
"""Records per partition sent in one batch. aiokafka's default (16 KiB) holds one or two
`interaction.embedded` events (an embedding is ~8 KB of JSON), so a flush of hundreds of
events became hundreds of round trips; under the brokers' default 1 MiB record batch."""


def make_producer(settings: KafkaSettings, *, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer: a retried send never duplicates a record in the log."""
    return AIOKafkaProducer(
        client_id=f"{settings.client_id_prefix}-{client_id}",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=PRODUCER_BATCH_BYTES,
        compression_type=None,
        **settings.client_kwargs(),
    )


class Consumer(AIOKafkaConsumer):
    """aiokafka's consumer, plus the committed offsets' metadata (where the loop keeps a
    record's failed attempts, so that the count outlives the process)."""

    async def committed_metadata(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, str]]:
        """`{tp: (offset, metadata)}` for the partitions this group has committed.

        aiokafka's public `committed()` drops the metadata; its coordinator has both (the
        same call `committed()` makes)."""
        found = await self._coordinator.fetch_committed_offsets(list(partitions))
        return {
            tp: (meta.offset, meta.metadata or "")
            for tp, meta in found.items()
            if meta is not None and meta.offset >= 0
        }


def make_consumer(
    settings: KafkaSettings,
    *,
    group_id: str | None,
    client_id: str,
    auto_offset_reset: str = "earliest",
    max_poll_interval_ms: int = 300_000,
    group_instance_id: str | None = None,
) -> Consumer:
    """A consumer with manual commits; subscribe it with a rebalance listener.

    A rebalance waits as long as a poll may take (`rebalance_timeout_ms` =
    `max_poll_interval_ms`): aiokafka's default is the 10 s session timeout, so a member whose
    revoke listener waits for a training of minutes was thrown out and another member ran
    the same request. `group_instance_id` (e.g. the pod name) makes the membership static:
    a restarted pod gets its partitions back without a rebalance."""
    return Consumer(
        client_id=f"{settings.client_id_prefix}-{client_id}",
        group_id=group_id,
        group_instance_id=group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        isolation_level="read_committed",
        max_poll_interval_ms=max_poll_interval_ms,
        rebalance_timeout_ms=max_poll_interval_ms,
        **settings.client_kwargs(),
    )


DLQ_RETENTION_MS = 7 * 24 * 3600 * 1000


def topic_configs(name: str, dlq_retention_ms: int = DLQ_RETENTION_MS) -> dict[str, str] | None:
    """The settings a new topic is created with."""
    if name.endswith(DLQ_SUFFIX):
        return {"retention.ms": str(dlq_retention_ms)}
    return TOPIC_CONFIGS.get(name)


async def create_topics(
    settings: KafkaSettings,
    names: Iterable[str] | None = None,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    with_dlq: bool = True,
    dlq_retention_ms: int = DLQ_RETENTION_MS,
) -> list[str]:
    """Create topics (and their `.dlq` twins) that do not exist yet; return those created.

    Dead-letter topics keep whole transcripts (personal data): they are created with
    `retention.ms = dlq_retention_ms` (7 days unless the service's settings say otherwise)."""
    wanted = list(names) if names is not None else list(ALL_TOPICS)
    if with_dlq:
        wanted += [dlq(name) for name in wanted if not name.endswith(".dlq")]
    admin = AIOKafkaAdminClient(
        client_id=f"{settings.client_id_prefix}-admin", **settings.client_kwargs()
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(wanted) if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        partitions,
                        replication_factor,
                        topic_configs=topic_configs(name, dlq_retention_ms),
                    )
                    for name in missing
                ]
            )
            # The broker answers per topic and aiokafka does not raise: read the codes.
            failed = [
                f"{name}: {for_code(code).__name__}" + (f" ({message})" if message else "")
                for name, code, message, *_ in response.topic_errors
                if code not in (0, TopicAlreadyExistsError.errno)
            ]
            if failed:
                raise ConfigError(f"could not create topics: {'; '.join(failed)}")
        return missing
    except KafkaError as exc:
        raise RetryableError(
            f"could not create topics on {settings.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        await admin.close()


def _reader(
    settings: KafkaSettings, client_id: str, *topics: str, from_beginning: bool
) -> AIOKafkaConsumer:
    """A consumer outside any group: it commits nothing, and once started it holds every
    partition of `topics`."""
    return AIOKafkaConsumer(
        *topics,
        client_id=f"{settings.client_id_prefix}-{client_id}",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **settings.client_kwargs(),
    )


async def read_since(
    settings: KafkaSettings, topic: str, since: datetime, *, client_id: str
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from `since` up to where each partition ends when called.

    For rebuilding a service's memory from its own past events at start-up. Close it with
    `contextlib.aclosing` when leaving early."""
    consumer = _reader(settings, client_id, topic, from_beginning=True)
    with kafka_errors(f"reading {topic} since {since.isoformat()}", settings):
        await consumer.start()
        try:
            tps = sorted(consumer.assignment())
            if not tps:
                return
            ends = await consumer.end_offsets(tps)
            starts = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in tps}
            )
            for tp in tps:
                start = starts.get(tp)
                consumer.seek(tp, start.offset if start else ends[tp])

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in tps])

            while await behind():
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        if record.offset < ends[TopicPartition(record.topic, record.partition)]:
                            yield record
        finally:
            await consumer.stop()


async def events_since(
    settings: KafkaSettings,
    topic: str,
    since: datetime,
    *,
    client_id: str,
    expected: tuple[type[E], ...],
) -> AsyncIterator[E]:
    """The events of `expected` types on `topic` since `since` (see `read_since`); records
    that are not such an event are skipped: they are someone else's dead letters."""
    history = read_since(settings, topic, since, client_id=client_id)
    async with contextlib.aclosing(history) as records:
        async for record in records:
            try:
                yield decode_event(record.value or b"", expected=expected)
            except PermanentError:
                continue


async def follow(
    settings: KafkaSettings,
    topics: Sequence[str],
    *,
    client_id: str,
    from_beginning: bool = False,
    poll_ms: int = 500,
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Batches of `topics`' records as they arrive, outside any group (nothing committed);
    an idle poll yields an empty batch, so the caller can stop or time out between them.
    A topic that does not exist is a `RetryableError` (it may be created later)."""
    consumer = _reader(settings, client_id, from_beginning=from_beginning)
    with kafka_errors(f"reading {', '.join(topics)}", settings):
        try:
            await asyncio.wait_for(consumer.start(), 30)
            existing = await consumer.topics()  # refreshes the cluster metadata
            if missing := sorted(set(topics) - existing):
                raise RetryableError(f"topic(s) {missing} do not exist")
            consumer.subscribe(list(topics))
            while True:
                batch = await consumer.getmany(timeout_ms=poll_ms)
                yield [record for records in batch.values() for record in records]
        finally:
            await consumer.stop()


async def cluster_answers(settings: KafkaSettings, timeout_s: float = 5.0) -> bool:
    """Whether the cluster answers one admin round trip (metadata / DescribeCluster)."""
    kwargs = settings.client_kwargs() | {"request_timeout_ms": int(timeout_s * 1000)}
    admin = AIOKafkaAdminClient(**kwargs)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return True
    except (KafkaError, OSError, TimeoutError, ValueError):  # while a broker boots: "not yet"
        return False
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()
