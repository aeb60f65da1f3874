"""The collector's work between the loop and the outside world.

    handle(piece)   add it to its conversation (nothing is published yet)
    flush()         close due conversations, embed them (at most `max_flush_conversations`
                    a flush, the rest on the next) in one batch sorted by length,
                    append them to the interaction store, return `interaction.embedded`
                    events, one per configured model type, keyed by model key, and a
                    `DeadLetter` for each conversation that can never be published
    flush_due_in    how long the loop may wait for new records before the next flush
    commit_floor    the oldest offset still held by an open or unflushed conversation:
                    the loop never commits past it, so a crash rebuilds them from Kafka

A conversation emitted twice (after a crash) gets the same event id and the store keeps
one copy, so downstream sees it once.

One bad conversation never fails a flush: it becomes a `DeadLetter` (for
`interactions.raw.dlq`, with all its source offsets and a small JSON of it) and the others
are embedded, stored and emitted. Its offsets are released like an emitted one's.

    unencodable_text     a string that is not valid Unicode (parsing rejects these already)
    invalid_interaction  the embedded row does not validate (a NaN in the vector)
    event_too_large      an `interaction.embedded` record over `max_event_bytes`, the
                         producer's request limit (the text cap keeps real ones far below)
    the store's codes    a row the interaction store refuses (`unstorable`, …): the batch
                         is stored without it

A restart (or a rebalance) re-reads each partition from its commit floor, which may lie
inside a conversation already emitted: A has pieces at offsets 0, 2, 3, 4 and was
emitted, B still held offset 1, so A is rebuilt from 2–4 only. Such a poorer copy is never
emitted again: a conversation with a piece below the partition's end offset at the time it
was assigned may have been emitted before, so the store is asked how many pieces its
stored copy has; a copy built from fewer is dropped (`already_stored`), and the store
keeps the most complete copy in any case. The store is read once per (language, day) per
assignment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from driftloop_collector.assembler import (
    AssemblerConfig,
    CompletedConversation,
    ConversationAssembler,
)
from driftloop_collector.genesys import ParseLimits, Piece, parse_raw
from driftloop_collector.settings import CollectorSettings
from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import PermanentError, RetryableError
from driftloop_common.contracts.events import (
    Event,
    InteractionEmbedded,
    InteractionEmbeddedEvent,
    ModelKey,
    describe_validation_error,
)
from driftloop_common.ml.encoder import TextEncoder
from driftloop_common.runtime.app import ReadyCheck
from driftloop_common.runtime.kafka import TopicPartition, kafka_errors
from driftloop_common.runtime.loop import LOG_APPEND_TIME, Consumer, DeadLetter, Record
from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter, gauge, histogram
from driftloop_common.runtime.service import ServiceBase
from driftloop_common.storage.interactions import InteractionStore, Provenance

log = logging.getLogger(__name__)
SERVICE = "collector"
_IDS = uuid.UUID("0c8f5a52-3d0e-4d61-8f2b-7a1c9e4b6d20")

RECORD_OVERHEAD_BYTES = 128
"""What a record adds to its key and value in a produce request: the record batch's
header (61 bytes) and the record's own varints and attributes (< 40)."""

DLQ_TEXT_CHARS = 4096
"""A dead letter shows this much of the text; the whole is in the source records."""


class CollectorMetrics(MetricSet):
    conversations = counter(
        "conversations_total", "Conversations emitted, by how they completed.", "completion"
    )
    dropped = counter("conversations_dropped_total", "Conversations dropped, by reason.", "reason")
    truncated = counter(
        "texts_truncated_total", "Conversations whose text was cut to the text cap."
    )
    open = gauge("open_conversations", "Conversations waiting for more pieces.")
    embed_seconds = histogram(
        "embedding_seconds",
        "Time to embed one flush's batch.",
        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )


class Collector(ServiceBase[Piece]):
    topics = (topics.INTERACTIONS_RAW,)

    @classmethod
    def from_settings(cls, settings: CollectorSettings) -> Collector:
        """The collector with its encoder loaded and its store opened."""
        encoder = TextEncoder(
            precision=settings.encoder_precision, num_threads=settings.encoder_threads
        ).load()
        return cls(
            settings,
            encoder=encoder,
            store=InteractionStore(settings.store_url),
            metrics=LoopMetrics(settings.service_name),
        )

    def __init__(
        self,
        settings: CollectorSettings,
        *,
        encoder: TextEncoder,
        store: InteractionStore,
        metrics: LoopMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.store = store
        self.metrics = metrics
        self.counts = CollectorMetrics(metrics)
        self.clock = clock
        self.limits = ParseLimits(
            max_text_bytes=settings.max_text_bytes,
            max_age=timedelta(days=settings.max_event_age_days),
            max_ahead=timedelta(days=settings.max_event_ahead_days),
        )
        self.assembler = ConversationAssembler(
            AssemblerConfig(
                wrapup_wait=timedelta(seconds=settings.wrapup_wait_s),
                settle=timedelta(seconds=settings.settle_s),
                max_wait=timedelta(seconds=settings.max_wait_s),
                max_open=settings.max_open,
                wrapup_labels=settings.wrapup_labels,
                max_text_bytes=settings.max_text_bytes,
            )
        )
        self._ready: list[CompletedConversation] = []
        # partition → its end offset when it was assigned: a piece below it may belong to a
        # conversation emitted before (no entry: not known, so any may)
        self._assigned_end: dict[int, int] = {}
        # (language, day) → conversation id → pieces of the stored copy, read once per
        # assignment (after it, so that what the previous owner stored is in)
        self._stored: dict[tuple[str, str], dict[str, int]] = {}

    # ------------------------------------------------------------ the loop's hooks
    def ready_checks(self) -> Mapping[str, ReadyCheck]:
        return {"model_loaded": lambda: self.encoder.loaded}

    def decode(self, record: Record) -> Piece:
        appended_at = (
            datetime.fromtimestamp(record.timestamp / 1000, UTC)
            if record.timestamp_type == LOG_APPEND_TIME
            else None
        )
        return parse_raw(
            record.value or b"",
            partition=record.partition,
            offset=record.offset,
            languages=self.settings.languages,
            appended_at=appended_at,
            now=self.clock() if appended_at is None else None,  # the broker's time, if any
            limits=self.limits,
        )

    async def handle(self, piece: Piece) -> list[Event]:
        self._ready += self.assembler.add(piece, self.clock())
        return []

    async def flush(self) -> list[Event | DeadLetter]:
        self._ready += self.assembler.expire(self.clock())
        for dropped in self.assembler.drain_dropped():
            self.counts.dropped.labels(dropped.reason.value).inc()
            log.info("dropped conversation %s: %s", dropped.conversation_id, dropped.reason)
        self.counts.open.set(self.assembler.open_conversations)
        if not self._ready:
            return []
        ready = self._ready[: self.settings.max_flush_conversations]  # the rest: next poll
        outputs = await asyncio.to_thread(self._embed_and_store, ready)
        del self._ready[: len(ready)]  # emitted, dead-lettered or skipped: offsets released
        return outputs

    def flush_due_in(self) -> float | None:
        """Seconds until the next conversation falls due (0 while some wait to be embedded)."""
        if self._ready:
            return 0.0
        due = self.assembler.next_due
        return None if due is None else max(0.0, (due - self.clock()).total_seconds())

    def commit_floor(self, tp: TopicPartition) -> int | None:
        held = [
            min(c.source_offsets[tp.partition])
            for c in self._ready
            if c.source_offsets.get(tp.partition)
        ]
        pending = self.assembler.min_pending_offset(tp.partition)
        if pending is not None:
            held.append(pending)
        return min(held) if held else None

    async def on_assigned(self, consumer: Consumer, partitions: set[TopicPartition]) -> None:
        """Note where each new partition ends now: what lies below was there before this
        consumer, and may have been emitted by another process."""
        self._stored.clear()
        mine = [tp for tp in partitions if tp.topic == topics.INTERACTIONS_RAW]
        if not mine:
            return
        try:
            with kafka_errors("reading the end offsets of interactions.raw", self.settings.kafka):
                ends = await consumer.end_offsets(mine)
        except RetryableError as exc:
            log.warning(
                "end offsets of %s unknown (%r): all their conversations are checked against "
                "the store",
                sorted(tp.partition for tp in mine),
                exc,
            )
            return
        for tp, end in ends.items():
            self._assigned_end[tp.partition] = end

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Forget what came from lost partitions, open or waiting for a flush: their new
        owner reads it again from the committed offset."""
        lost = {tp.partition for tp in partitions}
        self.assembler.revoke(lost)
        self._ready = [c for c in self._ready if lost.isdisjoint(c.source_offsets)]
        for partition in lost:
            self._assigned_end.pop(partition, None)
        self._stored.clear()

    # ------------------------------------------------------------ work
    def _embed_and_store(self, ready: list[CompletedConversation]) -> list[Event | DeadLetter]:
        letters: list[DeadLetter] = []
        todo = []
        for c in self._not_stored_whole(ready):
            if (error := _unencodable(c)) is not None:
                letters.append(_dead_letter(c, error))
            else:
                todo.append(c)
        if not todo:
            return list(letters)
        with self.counts.embed_seconds.time():
            vectors = self.encoder.encode(
                [c.text for c in todo], batch_size=self.settings.encoder_batch_size
            )
        built: dict[str, tuple[CompletedConversation, InteractionEmbedded, list[Event]]] = {}
        for c, vector in zip(todo, vectors, strict=True):
            try:
                row, events = self._row_and_events(c, vector.tolist())
            except PermanentError as error:
                letters.append(_dead_letter(c, error))
                continue
            built[c.conversation_id] = (c, row, events)
        for conversation_id, error in self._store(built).items():
            letters.append(_dead_letter(built.pop(conversation_id)[0], error))
        outputs: list[Event | DeadLetter] = list(letters)
        for c, _, events in built.values():
            self.counts.conversations.labels(c.completion.value).inc()
            if c.truncated:
                self.counts.truncated.inc()
            outputs += events
        return outputs

    def _not_stored_whole(self, ready: list[CompletedConversation]) -> list[CompletedConversation]:
        """`ready` without the conversations whose stored copy has more pieces (rebuilt
        after a restart from the records above the commit floor only)."""
        kept = []
        for c in ready:
            stored = self._stored_pieces(c) if self._maybe_emitted(c) else None
            if stored is not None and stored > c.pieces:
                self.counts.dropped.labels("already_stored").inc()
                log.info(
                    "conversation %s rebuilt from %d pieces, stored from %d: not emitted again",
                    c.conversation_id,
                    c.pieces,
                    stored,
                )
                continue
            kept.append(c)
        return kept

    def _maybe_emitted(self, c: CompletedConversation) -> bool:
        return any(
            partition not in self._assigned_end or offsets[0] < self._assigned_end[partition]
            for partition, offsets in c.source_offsets.items()
        )

    def _stored_pieces(self, c: CompletedConversation) -> int | None:
        """The pieces of the stored copy, looked up on the day of `completed_at` and the
        days either side (a copy rebuilt without its customer.end piece is dated by its
        latest piece instead)."""
        found = None
        day = c.completed_at.astimezone(UTC).date()
        for d in (day - timedelta(days=1), day, day + timedelta(days=1)):
            key = (c.language, d.isoformat())
            if key not in self._stored:
                self._stored[key] = self.store.pieces_stored(*key)
            pieces = self._stored[key].get(c.conversation_id)
            if pieces is not None and (found is None or pieces > found):
                found = pieces
        return found

    def _row_and_events(
        self, c: CompletedConversation, vector: list[float]
    ) -> tuple[InteractionEmbedded, list[Event]]:
        try:
            row = InteractionEmbedded(
                conversation_id=c.conversation_id,
                language=c.language,
                completed_at=c.completed_at,
                embedding=vector,
                encoder=self.encoder.info,
                label=c.label,
                text=c.text,
                queue=c.queue,
                media_type=c.media_type,
            )
            events: list[Event] = [
                InteractionEmbeddedEvent(
                    event_id=(event_id := uuid.uuid5(_IDS, f"{row.conversation_id}:{model_type}")),
                    correlation_id=event_id,
                    producer=SERVICE,
                    occurred_at=row.completed_at,
                    model_key=ModelKey(model_type=model_type, language=row.language),
                    payload=row,
                )
                for model_type in self.settings.model_types
            ]
        except ValidationError as exc:
            why = f"conversation {c.conversation_id!a}: {describe_validation_error(exc)}"
            raise PermanentError(why, code="invalid_interaction") from exc
        limit = self.settings.max_event_bytes
        for event in events:
            size = len(event.to_bytes()) + len(event.key) + RECORD_OVERHEAD_BYTES
            if size > limit:
                raise PermanentError(
                    f"conversation {c.conversation_id!a}: its {event.event_type} record would "
                    f"be {size} bytes, over the producer's limit of {limit} "
                    f"({len(c.text)} characters of text from {c.pieces} pieces)",
                    code="event_too_large",
                )
        return row, events

    def _store(
        self, built: dict[str, tuple[CompletedConversation, InteractionEmbedded, list[Event]]]
    ) -> dict[str, PermanentError]:
        """Append the rows; if the store refuses the batch, find the rows it refuses and
        store the rest. Returns the refused rows (by conversation id) with why."""
        if not built:
            return {}
        rows = [row for _, row, _ in built.values()]
        provenance = {
            cid: Provenance(pieces=c.pieces, first_offset=c.first_offset)
            for cid, (c, _, _) in built.items()
        }
        try:
            self.store.append(rows, provenance=provenance)
            return {}
        except PermanentError:
            bad = self.store.unstorable(rows)
            if not bad:
                raise  # no row alone is the cause: nothing to set aside
        self.store.append(
            [row for row in rows if row.conversation_id not in bad], provenance=provenance
        )
        return bad


def _unencodable(c: CompletedConversation) -> PermanentError | None:
    for name in ("conversation_id", "language", "text", "label", "queue", "media_type"):
        value = getattr(c, name)
        try:
            if value is not None:
                value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return PermanentError(
                f"conversation {c.conversation_id!a}: {name} cannot be encoded as UTF-8 "
                f"({exc.reason} at character {exc.start})",
                code="unencodable_text",
            )
    return None


def _dead_letter(c: CompletedConversation, error: PermanentError) -> DeadLetter:
    """What a person needs to see the conversation (the whole text is in its source
    records, at the offsets the dead letter lists). ASCII JSON: it holds what UTF-8 cannot."""
    summary = {
        "conversation_id": c.conversation_id,
        "language": c.language,
        "completed_at": c.completed_at.isoformat(),
        "label": c.label,
        "wrapup_code": c.wrapup_code,
        "queue": c.queue,
        "media_type": c.media_type,
        "completion": c.completion.value,
        "pieces": c.pieces,
        "text_chars": len(c.text),
        "text": c.text[:DLQ_TEXT_CHARS],
        "error": error.code,
    }
    return DeadLetter(
        topic=topics.INTERACTIONS_RAW,
        offsets={p: list(o) for p, o in c.source_offsets.items()},
        value=json.dumps(summary, ensure_ascii=True).encode("ascii"),
        key=c.conversation_id.encode("utf-8", "backslashreplace"),
        error=error,
    )
