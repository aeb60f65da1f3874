"""The loop every service runs: consume → validate → handle → produce → commit offset+1.

    batch = consumer.getmany()
    for record in batch:
        value   = decode(record)            # bad bytes → <topic>.dlq with the reason, go on
        outputs = await handle(value)       # pure: returns the events to publish
        produce(outputs), wait for acks     # idempotent producer
        mark offset+1 as handled
    commit the handled offsets               # never an offset whose message is not done

A `RetryableError` (or any unexpected exception) from `handle` or from producing is
retried with backoff; if it persists the loop commits what was fully handled and
re-raises, so the process exits and Kafka redelivers the message to the next one.
A `PermanentError` sends the message to the DLQ. SIGTERM (`stop()`) finishes the
current message, commits and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from driftloop_common.errors import PermanentError, RetryableError
from driftloop_common.events import Event
from driftloop_common.metrics import LoopMetrics
from driftloop_common.topics import dlq

log = logging.getLogger(__name__)

T = TypeVar("T")


class Record(Protocol):
    """What the loop reads from a consumed record (aiokafka's `ConsumerRecord` fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int  # epoch milliseconds
    timestamp_type: int  # `LOG_APPEND_TIME`: the broker's clock; otherwise the producer's


LOG_APPEND_TIME = 1
"""Kafka's `timestamp_type` of a record stamped by the broker when it appended it."""


Decoder = Callable[[Record], T]
"""Turns a record into the handler's input; raises `PermanentError` for unusable bytes."""

Handler = Callable[[T], Awaitable[Sequence[Event]]]
"""Handles one decoded message; returns the events to publish (each to its own topic)."""

@dataclass(frozen=True)
class DeadLetter:
    """Work a flush gives up on that is not one record: a conversation built from many
    pieces. It goes to `dlq(topic)` with the reason and every source offset in its headers,
    and the loop moves on (the rest of the flush is published as usual)."""

    topic: str  # the source topic
    offsets: Mapping[int, Sequence[int]]  # partition → offsets of the records it came from
    value: bytes  # what a person needs to look at or replay it
    key: bytes | None
    error: PermanentError


Flush = Callable[[], Awaitable[Sequence["Event | DeadLetter"]]]
"""Called after every poll (also when idle): for services that batch or wait for time to
pass (the collector embeds completed conversations in batches). Returns events to publish
and `DeadLetter`s for the items of the batch that can never be published."""

FlushDueIn = Callable[[], "float | None"]
"""Seconds until something the service buffers falls due (None: nothing waits on time):
an idle poll waits no longer than that, so a flush is not late by a whole poll timeout."""

CommitFloor = Callable[[TopicPartition], "int | None"]
"""The lowest offset of `tp` a service still needs (state held in memory); the loop never
commits past it, so after a crash that state is rebuilt by re-reading Kafka."""

OnAssigned = Callable[[Any, set[TopicPartition]], Awaitable[None]]
"""Called with the consumer when partitions are assigned (e.g. to seek by timestamp)."""

OnRevoked = Callable[[set[TopicPartition]], Awaitable[None]]
"""Called after the revoked partitions' offsets were committed: forget their state."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0


@dataclass
class LoopState:
    """What `/healthz` and `/readyz` look at."""

    heartbeat: float = 0.0  # monotonic time of the last poll
    joined_group: bool = False
    producer_started: bool = False
    assignment: set[TopicPartition] = field(default_factory=set)
    stopped: bool = False

    def heartbeat_age(self) -> float:
        return time.monotonic() - self.heartbeat if self.heartbeat else float("inf")


MAX_REASON_CHARS = 2000
"""A validation error over a huge payload can list thousands of problems: keep the first."""


def short_reason(error: Exception) -> str:
    reason = str(error)
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[:MAX_REASON_CHARS] + f"… ({len(reason) - MAX_REASON_CHARS} more characters)"


def dlq_headers(record: Record, error: PermanentError, service: str) -> list[tuple[str, bytes]]:
    """Why a message was dead-lettered and where it came from, next to its original bytes."""
    return [
        *[(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")],
        ("dlq.reason", short_reason(error).encode()),
        ("dlq.reason_code", error.code.encode()),
        ("dlq.source_topic", record.topic.encode()),
        ("dlq.source_partition", str(record.partition).encode()),
        ("dlq.source_offset", str(record.offset).encode()),
        ("dlq.service", service.encode()),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]


class ServiceLoop(Generic[T]):
    """Runs one service's consume-handle-produce-commit cycle over injected clients."""

    def __init__(
        self,
        *,
        service: str,
        topics: Iterable[str],
        decode: Decoder[T],
        handle: Handler[T],
        consumer: Any,
        producer: Any,
        metrics: LoopMetrics | None = None,
        retry: RetryPolicy | None = None,
        poll_timeout_ms: int = 1000,
        max_batch_records: int = 500,
        route: Callable[[Event], str] | None = None,
        flush: Flush | None = None,
        flush_due_in: FlushDueIn | None = None,
        commit_floor: CommitFloor | None = None,
        on_assigned: OnAssigned | None = None,
        on_revoked: OnRevoked | None = None,
        busy_heartbeat_s: float | None = None,
    ) -> None:
        self.service = service
        self.topics = list(topics)
        self.decode = decode
        self.handle = handle
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics or LoopMetrics(service)
        self.retry = retry or RetryPolicy()
        self.poll_timeout_ms = poll_timeout_ms
        self.max_batch_records = max_batch_records
        self.route = route or (lambda event: event.topic)
        self.flush = flush
        self.flush_due_in = flush_due_in
        self.commit_floor = commit_floor
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        # Long handlers (a training of minutes) keep beating while they work, so /healthz
        # tells a busy service from a stuck poll loop.
        self.busy_heartbeat_s = busy_heartbeat_s
        self.state = LoopState()
        self._handled: dict[TopicPartition, int] = {}  # offset after the last handled record
        self._committed: dict[TopicPartition, int] = {}
        self._position: dict[TopicPartition, int] = {}  # next offset to handle (for the lag)
        self._live: set[TopicPartition] = set()  # owned now; a revoke empties it at once
        self._floors: dict[TopicPartition, int | None] | None = None  # frozen during a flush
        self._processing = asyncio.Lock()  # a revoke waits for the in-flight record
        self._stop = asyncio.Event()

    # ------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the loop to finish the current message, commit and return."""
        self._stop.set()

    async def run(self) -> None:
        """Start the clients, loop until `stop()`, then commit and close."""
        await self.producer.start()
        self.state.producer_started = True
        try:
            await self.consumer.start()
            self.consumer.subscribe(topics=self.topics, listener=_Rebalance(self))
            while not self._stop.is_set():
                await self.poll_once()
        finally:
            try:
                await self._commit()
            finally:
                self.state.stopped = True
                await self.consumer.stop()
                await self.producer.stop()
                self.state.producer_started = False

    async def poll_once(self) -> None:
        """One batch: handle each record in order, then commit what was handled."""
        batch = await self.consumer.getmany(
            timeout_ms=self._poll_timeout_ms(), max_records=self.max_batch_records
        )
        self._beat()
        try:
            for tp, records in batch.items():
                for record in records:
                    if self._stop.is_set():
                        break  # an unhandled record is redelivered after the restart
                    async with self._processing:
                        if tp not in self._live:
                            break  # revoked mid-batch: the new owner handles the rest
                        await self._process(tp, record)
                    self._beat()
            if self.flush is not None:
                async with self._processing:  # a revoke waits until the flush is published
                    await self._flush(self.flush)
        finally:
            await self._commit()
        self._update_lag()

    def _poll_timeout_ms(self) -> int:
        due_in = self.flush_due_in() if self.flush_due_in is not None else None
        if due_in is None:
            return self.poll_timeout_ms
        return min(self.poll_timeout_ms, max(0, math.ceil(due_in * 1000)))

    async def _flush(self, flush: Flush) -> None:
        """Publish what the service buffered. The commit floors are frozen first: if the
        publish fails, the buffered messages' offsets must stay uncommitted."""
        if self.commit_floor is not None:
            self._floors = {tp: self.commit_floor(tp) for tp in self._handled}
        outputs = await self._with_retries(flush, {"flush": True})
        await self._with_retries(lambda: self._publish(outputs), {"flush": True})
        self._floors = None

    # ------------------------------------------------------------ one record
    async def _process(self, tp: TopicPartition, record: Record) -> None:
        started = time.perf_counter()
        self.metrics.received.labels(record.topic).inc()
        context = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            value = self.decode(record)
            if isinstance(value, Event):
                context["event_id"] = str(value.event_id)
            async with self._beating():
                outputs = await self._with_retries(lambda: self.handle(value), context)
            await self._with_retries(lambda: self._publish(outputs), context)
            status = "ok"
        except PermanentError as exc:
            error = exc
            self.metrics.exceptions.labels(type(error).__name__).inc()
            log.warning(
                "dead-lettering: %s", short_reason(error), extra={**context, "reason": error.code}
            )
            await self._with_retries(lambda: self._dead_letter(record, error), context)
            status = "dlq"
        self._handled[tp] = self._position[tp] = record.offset + 1
        self.metrics.processed.labels(record.topic, status).inc()
        self.metrics.processing_seconds.labels(record.topic).observe(time.perf_counter() - started)
        log.debug("handled", extra={**context, "status": status})

    async def _with_retries(self, attempt: Callable[[], Awaitable[Any]], context: dict) -> Any:
        """Retry anything but a `PermanentError`; re-raise the last error when attempts run out.

        The first attempt runs bare: building tenacity's machinery for every record cost
        more than the records themselves (see docs/benchmarks.md)."""
        try:
            return await attempt()
        except PermanentError:
            raise
        except Exception as exc:
            if self.retry.attempts <= 1:
                self.metrics.exceptions.labels(type(exc).__name__).inc()
                log.error("giving up after 1 attempt: %r", exc, extra=context)
                raise
            self.metrics.exceptions.labels(type(exc).__name__).inc()
            log.warning("attempt 1 failed, retrying: %r", exc, extra=context)
        await asyncio.sleep(self.retry.initial_backoff_s)
        return await self._retry(attempt, context)

    async def _retry(self, attempt: Callable[[], Awaitable[Any]], context: dict) -> Any:
        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            self.metrics.exceptions.labels(type(exc).__name__).inc()
            log.warning(
                "attempt %d failed, retrying: %r", state.attempt_number + 1, exc, extra=context
            )
            self._beat()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts - 1),  # the first one already failed
            wait=wait_exponential_jitter(
                multiplier=self.retry.initial_backoff_s, max=self.retry.max_backoff_s
            ),
            # Exception only: a cancelled task (BaseException) must stop, not be retried.
            retry=retry_if_exception_type(Exception) & retry_if_not_exception_type(PermanentError),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for try_ in retrying:
                with try_:
                    result = await attempt()
            return result
        except PermanentError:
            raise
        except Exception as exc:
            self.metrics.exceptions.labels(type(exc).__name__).inc()
            log.error("giving up after %d attempts: %r", self.retry.attempts, exc, extra=context)
            raise

    async def _publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        try:
            pending = [
                await self.producer.send(self.route(event), event.to_bytes(), key=event.key)
                for event in events
            ]
            await asyncio.gather(*pending)
        except KafkaError as exc:
            raise _translate(exc, "producing the outputs") from exc
        for event in events:
            self.metrics.published.labels(self.route(event)).inc()

    async def _dead_letter(self, record: Record, error: PermanentError) -> None:
        topic = dlq(record.topic)
        headers = dlq_headers(record, error, self.service)
        value = record.value if record.value is not None else b""
        try:
            try:
                await (await self.producer.send(topic, value, key=record.key, headers=headers))
            except KafkaError as exc:
                if exc.retriable:
                    raise
                # Too large (or otherwise unsendable) as it is: keep the reason, drop the bytes.
                headers.append(("dlq.value_dropped", repr(exc).encode()))
                await (await self.producer.send(topic, b"", key=record.key, headers=headers))
        except KafkaError as exc:
            raise RetryableError(f"producing to {topic} failed: {exc!r}") from exc
        self.metrics.dead_lettered.labels(record.topic, error.code).inc()
        self.metrics.published.labels(topic).inc()

    # ------------------------------------------------------------ offsets
    async def _commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit the handled offsets (of `partitions`, default all), never past the
        service's commit floor; retried like a handler."""
        chosen = set(partitions) if partitions is not None else set(self._handled)
        offsets: dict[TopicPartition, int] = {}
        for tp in chosen & set(self._handled):
            if tp not in self._live:
                continue  # no longer ours: committing it would fail; its new owner re-reads
            target = self._handled[tp]
            if self._floors is not None:
                floor = self._floors.get(tp)
            else:
                floor = self.commit_floor(tp) if self.commit_floor is not None else None
            if floor is not None:
                target = min(target, floor)
            if target > self._committed.get(tp, -1):
                offsets[tp] = target
        if not offsets:
            return
        await self._with_retries(lambda: self._commit_once(offsets), {"commit": True})

    async def _commit_once(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Expected around a rebalance: the new owner gets these messages again and the
            # handlers are idempotent.
            log.warning("commit failed after a rebalance; messages will be redelivered: %s", exc)
        except KafkaError as exc:
            raise RetryableError(f"commit failed: {exc!r}") from exc

    @contextlib.asynccontextmanager
    async def _beating(self) -> AsyncIterator[None]:
        if self.busy_heartbeat_s is None:
            yield
            return

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.busy_heartbeat_s)
                self._beat()

        task = asyncio.create_task(beat(), name="busy-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _beat(self) -> None:
        self.state.heartbeat = time.monotonic()
        self.metrics.heartbeat.set_to_current_time()

    def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            position = self._position.get(tp)
            if highwater is not None and position is not None:
                lag = max(highwater - position, 0)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)


def _translate(exc: KafkaError, doing: str) -> Exception:
    """A retriable Kafka error may succeed later; any other (too large, not authorized,
    invalid topic) never will, so the input goes to the DLQ instead of crash-looping."""
    if exc.retriable:
        return RetryableError(f"{doing} failed: {exc!r}")
    return PermanentError(f"{doing} failed for good: {exc!r}", code="unpublishable")


class _Rebalance(ConsumerRebalanceListener):
    """Commits handled offsets before partitions move; records the assignment for /readyz."""

    def __init__(self, loop: ServiceLoop[Any]) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        loop = self.loop
        async with loop._processing:  # let the in-flight record finish first
            await loop._commit(revoked)
            for tp in revoked:
                loop._live.discard(tp)
                loop._handled.pop(tp, None)
                loop._committed.pop(tp, None)
                loop._position.pop(tp, None)
                with contextlib.suppress(KeyError):
                    loop.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            if loop.on_revoked is not None:
                await loop.on_revoked(set(revoked))
        loop.state.assignment -= set(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.loop._live |= set(assigned)
        if self.loop.on_assigned is not None:
            await self.loop.on_assigned(self.loop.consumer, set(assigned))
        self.loop.state.assignment = set(self.loop.consumer.assignment())
        self.loop.state.joined_group = True
        log.info("partitions assigned: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
