"""The loop every service runs: consume → validate → handle → produce → commit offset+1.

    batch = consumer.getmany()
    for record in batch:
        value   = decode(record)            # bad bytes → <topic>.dlq with the reason, go on
        outputs = await handle(value)       # pure: returns the events to publish
        produce(outputs), wait for acks     # idempotent producer
        mark offset+1 as handled
    commit the handled offsets               # never an offset whose message is not done

What goes wrong, and what the loop does:

    PermanentError          the input will never do: to the DLQ with its reason, go on
    RetryableError          an outage (broker, MLflow down): retried with backoff; if it
                            persists the loop commits what was handled and re-raises, the
                            process exits and Kafka redelivers the message to the next one
    any other exception     a bug this input triggers: retried, counted; after
                            `max_failures` failed attempts the message goes to the DLQ
                            (`handler_failed`, with the exception) and the loop goes on

The failure count is written into the committed offset's metadata (Kafka keeps it with the
group), so it outlives the process: a crash-looping service still gets there. With
`track_in_flight` the loop also notes each record before handling it, so one that kills the
process (OOM, a native crash) counts too. SIGTERM (`stop()`) finishes the current message,
commits and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from driftloop_common.contracts.errors import (
    DriftloopError,
    HandlerFailedError,
    InvalidEventError,
    PermanentError,
    RetryableError,
)
from driftloop_common.contracts.events import Event
from driftloop_common.contracts.topics import dlq
from driftloop_common.runtime.metrics import LoopMetrics

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


class Consumer(Protocol):
    """What the loop needs of a consumer (`driftloop_common.runtime.kafka.Consumer` fits; so
    do the unit tests' fakes), and what a service's `on_assigned` may do with it: read the
    partitions' ends and seek them."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]: ...

    async def commit(self, offsets: Mapping[TopicPartition, int | tuple[int, str]]) -> None: ...

    async def committed_metadata(
        self, partitions: Iterable[TopicPartition]
    ) -> Mapping[TopicPartition, tuple[int, str]]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Any]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def seek_to_end(self, *partitions: TopicPartition) -> None: ...


async def seek_to_time(
    consumer: Consumer, partitions: list[TopicPartition], since: datetime
) -> None:
    """Position each partition at its first record at or after `since` (at its end when it
    has none): how a service rebuilds in-memory windows from Kafka after a restart."""
    found = await consumer.offsets_for_times(
        {tp: int(since.timestamp() * 1000) for tp in partitions}
    )
    for tp in partitions:
        position = found.get(tp)
        if position is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, position.offset)


class Producer(Protocol):
    """What the loop needs of a producer (aiokafka's `AIOKafkaProducer` fits): `send`
    returns a future that resolves once the broker acknowledged the record."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...


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

OnAssigned = Callable[[Consumer, set[TopicPartition]], Awaitable[None]]
"""Called with the consumer when partitions are assigned (e.g. to seek by timestamp)."""

OnRevoked = Callable[[set[TopicPartition]], Awaitable[None]]
"""Called after the revoked partitions' offsets were committed: forget their state."""


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts`: tries of an operation that raised `RetryableError` before the process gives
    up (Kafka redelivers); `max_failures`: failed attempts of a handler with an unexpected
    error before its message is dead-lettered (counted across restarts)."""

    attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_failures: int = 5

    def backoff(self, failures: int) -> float:
        return min(self.initial_backoff_s * 2 ** max(failures - 1, 0), self.max_backoff_s)


@dataclass(frozen=True)
class Attempts:
    """What the committed offset's metadata says about the record at `offset`: how often
    its handler failed, and whether a process was handling it when it last wrote."""

    offset: int
    failures: int  # failed attempts, deaths included
    in_flight: bool = False  # a process was handling it when this was written
    error: str = ""  # the last exception, "Type: message"
    deaths: int = 0  # of the failures, how many were processes that died handling it

    MAX_ERROR_CHARS = 300  # Kafka keeps at most 4096 bytes of metadata by default

    def to_metadata(self) -> str:
        return json.dumps(
            {
                "driftloop.attempts": 1,
                "offset": self.offset,
                "failures": self.failures,
                "in_flight": self.in_flight,
                "error": self.error[: self.MAX_ERROR_CHARS],
                "deaths": self.deaths,
            }
        )

    @classmethod
    def from_metadata(cls, metadata: str) -> Attempts | None:
        """None for empty or foreign metadata (another tool may commit for the group)."""
        try:
            data = json.loads(metadata) if metadata else None
            if not isinstance(data, dict) or data.get("driftloop.attempts") != 1:
                return None
            return cls(
                offset=int(data["offset"]),
                failures=int(data["failures"]),
                in_flight=bool(data.get("in_flight", False)),
                error=str(data.get("error", "")),
                deaths=int(data.get("deaths", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def failures_so_far(self) -> int:
        """An attempt noted in flight and never finished: the process died during it."""
        return self.failures + (1 if self.in_flight else 0)


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
        *_why(error, service),
        ("dlq.source_topic", record.topic.encode()),
        ("dlq.source_partition", str(record.partition).encode()),
        ("dlq.source_offset", str(record.offset).encode()),
    ]


def dead_letter_headers(letter: DeadLetter, service: str) -> list[tuple[str, bytes]]:
    """The headers of a flush's dead letter: its first source record, and all of them."""
    partition = min(letter.offsets, default=-1)
    first = min(letter.offsets[partition], default=-1) if letter.offsets else -1
    offsets = {str(p): sorted(o) for p, o in sorted(letter.offsets.items())}
    return [
        *_why(letter.error, service),
        ("dlq.source_topic", letter.topic.encode()),
        ("dlq.source_partition", str(partition).encode()),
        ("dlq.source_offset", str(first).encode()),
        ("dlq.source_offsets", json.dumps(offsets, separators=(",", ":")).encode()),
    ]


def _why(error: PermanentError, service: str) -> list[tuple[str, bytes]]:
    headers = [
        ("dlq.reason", _header(short_reason(error))),
        ("dlq.reason_code", _header(error.code)),
        ("dlq.service", _header(service)),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    if isinstance(error, HandlerFailedError):
        headers += [
            ("dlq.exception_type", _header(error.exception_type)),
            ("dlq.failures", str(error.failures).encode()),
        ]
    return headers


def _header(text: str) -> bytes:
    """UTF-8, with anything unencodable escaped: a reason quoting a lone surrogate from
    the input must not make the dead letter itself unsendable."""
    return text.encode("utf-8", errors="backslashreplace")


def _handler_failed(failures: int, deaths: int, last_error: str) -> HandlerFailedError:
    kind, _, _ = last_error.partition(": ")
    died = f" ({deaths} of them: the process died while handling it)" if deaths else ""
    last = f"; last error: {last_error}" if last_error else ""
    return HandlerFailedError(
        f"the handler failed {failures} times on this input{died}{last}",
        exception_type=kind or ("process died" if deaths else "unknown"),
        failures=failures,
    )


OUTAGES: tuple[type[BaseException], ...] = (DriftloopError, KafkaError, OSError)
"""What a handler may raise that is not the input's fault: our own errors (a
`RetryableError` is retried, a `PermanentError` dead-lettered), Kafka's, and the OS's
(a connection refused or a timeout an adapter did not translate): never counted."""


class ServiceLoop(Generic[T]):
    """Runs one service's consume-handle-produce-commit cycle over injected clients."""

    def __init__(
        self,
        *,
        service: str,
        topics: Iterable[str],
        decode: Decoder[T],
        handle: Handler[T],
        consumer: Consumer,
        producer: Producer,
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
        track_in_flight: bool = False,
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
        self.track_in_flight = track_in_flight
        self.state = LoopState()
        self._handled: dict[TopicPartition, int] = {}  # offset after the last handled record
        self._committed: dict[TopicPartition, int] = {}
        self._position: dict[TopicPartition, int] = {}  # next offset to handle (for the lag)
        self._live: set[TopicPartition] = set()  # owned now; a revoke empties it at once
        self._floors: dict[TopicPartition, int | None] | None = None  # frozen during a flush
        # The note on a partition's next failing (or in-flight) record, as read from or
        # written to the committed offset's metadata; the metadata last committed; the
        # partitions whose metadata was not read yet.
        self._attempts: dict[TopicPartition, Attempts] = {}
        self._committed_metadata: dict[TopicPartition, str] = {}
        self._unread: set[TopicPartition] = set()
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
                        if tp in self._unread:
                            await self._read_attempts(tp)
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
        """Publish what the service buffered, dead letters first. The commit floors are
        frozen first: if the publish fails, the buffered messages' offsets must stay
        uncommitted."""
        if self.commit_floor is not None:
            self._floors = {tp: self.commit_floor(tp) for tp in self._handled}
        outputs = await self._with_retries(flush, {"flush": True})
        letters = [o for o in outputs if isinstance(o, DeadLetter)]
        events = [o for o in outputs if not isinstance(o, DeadLetter)]
        for letter in letters:
            context = {
                "topic": letter.topic,
                "offsets": {p: list(o) for p, o in letter.offsets.items()},
            }
            log.warning(
                "dead-lettering: %s",
                short_reason(letter.error),
                extra={**context, "reason": letter.error.code},
            )
            await self._with_retries(lambda letter=letter: self._send_dead_letter(letter), context)
        try:
            await self._with_retries(lambda: self._publish(events), {"flush": True})
        except PermanentError:
            await self._publish_each(events)  # one of them can never be sent: find it
        self._floors = None

    async def _publish_each(self, events: Sequence[Event]) -> None:
        """Publish a flush's events one at a time; one Kafka refuses for good (a topic whose
        `max.message.bytes` is below ours) goes to its topic's DLQ, with the reason. Events
        the batch got out already are sent again: same event ids, which consumers dedupe."""
        for event in events:
            try:
                await self._with_retries(
                    lambda event=event: self._publish([event]), {"flush": True}
                )
            except PermanentError as error:
                topic = self.route(event)
                log.warning(
                    "dead-lettering an output: %s",
                    short_reason(error),
                    extra={"topic": topic, "event_id": str(event.event_id), "reason": error.code},
                )
                headers = [*_why(error, self.service), ("dlq.source_topic", _header(topic))]
                await self._with_retries(
                    lambda event=event, topic=topic, headers=headers, error=error: (
                        self._send_to_dlq(topic, event.to_bytes(), event.key, headers, error.code)
                    ),
                    {"flush": True},
                )

    # ------------------------------------------------------------ one record
    async def _process(self, tp: TopicPartition, record: Record) -> None:
        started = time.perf_counter()
        self.metrics.received.labels(record.topic).inc()
        context = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            value = self._decode(record)
            if isinstance(value, Event):
                context["event_id"] = str(value.event_id)
            outputs = await self._handle(tp, record, value, context)
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
        except OUTAGES:
            # An outage: this process gives up on the record, which was not the record's
            # fault. A note that says "in flight" would count as a death on the next start.
            noted = self._attempts.get(tp)
            if noted is not None and noted.offset == record.offset and noted.in_flight:
                self._attempts[tp] = dataclasses.replace(noted, in_flight=False)
            raise
        noted = self._attempts.get(tp)
        if noted is not None and record.offset >= noted.offset:
            del self._attempts[tp]  # the next commit clears the note
        self._handled[tp] = self._position[tp] = record.offset + 1
        self.metrics.processed.labels(record.topic, status).inc()
        self.metrics.processing_seconds.labels(record.topic).observe(time.perf_counter() - started)
        log.debug("handled", extra={**context, "status": status})

    def _decode(self, record: Record) -> T:
        """Decoders are pure: a data error they let through (a `RecursionError` on absurd
        nesting, a `ValueError` from a parser) is about the bytes. Anything else is a bug
        in the decoder and stops the service."""
        try:
            return self.decode(record)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise InvalidEventError(
                f"the decoder failed: {type(exc).__name__}: {short_reason(exc)}"
            ) from exc

    async def _handle(
        self, tp: TopicPartition, record: Record, value: T, context: dict
    ) -> Sequence[Event]:
        """Run the handler: `RetryableError`s are retried (then re-raised, as everywhere);
        any other exception counts as a failure of this input, noted in Kafka, and the
        `max_failures`-th turns into a `HandlerFailedError` (the DLQ)."""
        noted = self._attempts.get(tp)
        mine = noted is not None and noted.offset == record.offset
        failures = noted.failures_so_far() if noted and mine else 0
        deaths = noted.deaths + int(noted.in_flight) if noted and mine else 0
        last_error = noted.error if noted and mine else ""
        # A record below a pending note is a replay (re-read from a commit floor): noting it
        # would overwrite the count of the record that is really failing.
        replay = noted is not None and record.offset < noted.offset
        while True:
            if failures >= self.retry.max_failures:
                raise _handler_failed(failures, deaths, last_error)
            if self.track_in_flight and not replay:
                await self._note(tp, Attempts(record.offset, failures, True, last_error, deaths))
            try:
                async with self._beating():
                    return await self._with_retries(
                        lambda: self.handle(value), context, retry_unexpected=False
                    )
            except OUTAGES:
                raise
            except Exception as exc:  # the one place that sorts a handler's bugs: counted
                failures += 1
                last_error = f"{type(exc).__name__}: {short_reason(exc)}"
                self.metrics.exceptions.labels(type(exc).__name__).inc()
                log.warning(
                    "handler failed (%d of %d): %s",
                    failures,
                    self.retry.max_failures,
                    last_error,
                    exc_info=True,
                    extra=context,
                )
                if failures < self.retry.max_failures:
                    await self._note(
                        tp, Attempts(record.offset, failures, False, last_error, deaths)
                    )
                    await asyncio.sleep(self.retry.backoff(failures))
                    self._beat()

    async def _read_attempts(self, tp: TopicPartition) -> None:
        """What an earlier process noted about this partition's next record."""

        async def read() -> dict[TopicPartition, tuple[int, str]]:
            try:
                return await self.consumer.committed_metadata([tp])
            except KafkaError as exc:
                raise RetryableError(f"reading the committed offset of {tp}: {exc!r}") from exc

        committed = await self._with_retries(read, {"topic": tp.topic, "partition": tp.partition})
        self._unread.discard(tp)
        _, metadata = committed.get(tp, (-1, ""))
        self._committed_metadata[tp] = metadata
        noted = Attempts.from_metadata(metadata)
        if noted is not None:
            self._attempts[tp] = noted
            log.warning(
                "partition %s: the record at offset %d failed %d time(s) before%s: %s",
                tp,
                noted.offset,
                noted.failures_so_far(),
                " (a process died while handling it)" if noted.in_flight else "",
                noted.error or "no error recorded",
            )

    async def _note(self, tp: TopicPartition, attempts: Attempts) -> None:
        """Keep `attempts` in the committed offset's metadata, now."""
        self._attempts[tp] = attempts
        await self._commit([tp])

    async def _with_retries(
        self, attempt: Callable[[], Awaitable[Any]], context: dict, retry_unexpected: bool = True
    ) -> Any:
        """Retry anything but a `PermanentError` (only `RetryableError` and Kafka's errors
        when not `retry_unexpected`); re-raise the last error when attempts run out.

        The first attempt runs bare: building tenacity's machinery for every record cost
        more than the records themselves (see docs/benchmarks.md)."""
        try:
            return await attempt()
        except PermanentError:
            raise
        except Exception as exc:
            if not retry_unexpected and not isinstance(exc, RetryableError | KafkaError):
                raise
            if self.retry.attempts <= 1:
                self.metrics.exceptions.labels(type(exc).__name__).inc()
                log.error("giving up after 1 attempt: %r", exc, extra=context)
                raise
            self.metrics.exceptions.labels(type(exc).__name__).inc()
            log.warning("attempt 1 failed, retrying: %r", exc, extra=context)
        await asyncio.sleep(self.retry.initial_backoff_s)
        return await self._retry(attempt, context, retry_unexpected)

    async def _retry(
        self, attempt: Callable[[], Awaitable[Any]], context: dict, retry_unexpected: bool
    ) -> Any:
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
            retry=retry_if_exception_type(
                Exception if retry_unexpected else (RetryableError, KafkaError)
            )
            & retry_if_not_exception_type(PermanentError),
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
        headers = dlq_headers(record, error, self.service)
        value = record.value if record.value is not None else b""
        await self._send_to_dlq(record.topic, value, record.key, headers, error.code)

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        headers = dead_letter_headers(letter, self.service)
        await self._send_to_dlq(letter.topic, letter.value, letter.key, headers, letter.error.code)

    async def _send_to_dlq(
        self, source: str, value: bytes, key: bytes | None, headers: list, code: str
    ) -> None:
        topic = dlq(source)
        try:
            try:
                await (await self.producer.send(topic, value, key=key, headers=headers))
            except KafkaError as exc:
                if not _record_at_fault(exc):
                    raise
                # Too large (or otherwise unsendable) as it is: keep the reason, drop the bytes.
                headers.append(("dlq.value_dropped", repr(exc).encode()))
                await (await self.producer.send(topic, b"", key=key, headers=headers))
        except KafkaError as exc:
            raise RetryableError(f"producing to {topic} failed: {exc!r}") from exc
        self.metrics.dead_lettered.labels(source, code).inc()
        self.metrics.published.labels(topic).inc()

    # ------------------------------------------------------------ offsets
    async def _commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit the handled offsets (of `partitions`, default all), never past the
        service's commit floor, with the partition's note on its next record (if any) as
        the offset's metadata; retried like a handler.

        A noted record is not handled yet, so the offset committed with its note is at most
        its own. A plain offset (empty metadata) clears an earlier note."""
        chosen = set(partitions) if partitions is not None else {*self._handled, *self._attempts}
        offsets: dict[TopicPartition, int | tuple[int, str]] = {}
        for tp in chosen:
            if tp not in self._live:
                continue  # no longer ours: committing it would fail; its new owner re-reads
            note = self._attempts.get(tp)
            target = self._handled.get(tp)
            if note is not None:
                target = note.offset if target is None else min(target, note.offset)
            if target is None:
                continue
            if self._floors is not None:
                floor = self._floors.get(tp)
            else:
                floor = self.commit_floor(tp) if self.commit_floor is not None else None
            if floor is not None:
                target = min(target, floor)
            committed = self._committed.get(tp, -1)
            target = max(target, committed)  # a note may be due where nothing moved
            metadata = note.to_metadata() if note is not None else ""
            if target > committed or metadata != self._committed_metadata.get(tp, ""):
                offsets[tp] = (target, metadata) if metadata else target
        if not offsets:
            return
        await self._with_retries(lambda: self._commit_once(offsets), {"commit": True})

    async def _commit_once(self, offsets: Mapping[TopicPartition, int | tuple[int, str]]) -> None:
        try:
            await self.consumer.commit(offsets)
            for tp, value in offsets.items():
                offset, metadata = value if isinstance(value, tuple) else (value, "")
                self._committed[tp] = offset
                self._committed_metadata[tp] = metadata
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


_RECORD_AT_FAULT: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
)
"""Kafka errors about the record itself: no retry will ever send it. (A corrupt message,
errno 2, is a CRC or transport fault: Kafka's own client retries it, so do we.)"""


def _record_at_fault(exc: KafkaError) -> bool:
    return isinstance(exc, _RECORD_AT_FAULT)


def _translate(exc: KafkaError, doing: str) -> Exception:
    """Only an error about the record itself (too large) sends the input to
    the DLQ. Every other one (not authorized, a timeout, a fenced producer, a sequence out of
    order) is the cluster's or ours, not the input's: retried, then the process stops."""
    if _record_at_fault(exc):
        return PermanentError(f"{doing} failed for good: {exc!r}", code="unpublishable")
    return RetryableError(f"{doing} failed: {exc!r}")


class _Rebalance(ConsumerRebalanceListener):
    """Commits handled offsets before partitions move; records the assignment for /readyz."""

    def __init__(self, loop: ServiceLoop[Any]) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        loop = self.loop
        async with loop._processing:  # let the in-flight record finish first
            try:
                await loop._commit(revoked)
            finally:
                self._forget(revoked)
                loop.state.assignment -= set(revoked)
                if loop.on_revoked is not None:
                    await loop.on_revoked(set(revoked))

    def _forget(self, revoked: Any) -> None:
        """Drop what the loop knew of partitions it no longer owns (even if the commit
        failed: aiokafka logs and swallows a listener's exception)."""
        loop = self.loop
        for tp in revoked:
            loop._live.discard(tp)
            loop._handled.pop(tp, None)
            loop._committed.pop(tp, None)
            loop._position.pop(tp, None)
            loop._attempts.pop(tp, None)
            loop._committed_metadata.pop(tp, None)
            loop._unread.discard(tp)
            with contextlib.suppress(KeyError):
                loop.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.loop._live |= set(assigned)
        self.loop._unread |= set(assigned)  # their committed metadata is read before use
        if self.loop.on_assigned is not None:
            await self.loop.on_assigned(self.loop.consumer, set(assigned))
        self.loop.state.assignment = set(self.loop.consumer.assignment())
        self.loop.state.joined_group = True
        self.loop._beat()  # the loop is alive: this runs inside its poll
        log.info("partitions assigned: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
