"""The collector's work between the loop and the outside world.

    handle(piece)   add it to its conversation (nothing is published yet)
    flush()         close due conversations, embed them (at most `max_flush_conversations`
                    a flush, the rest on the next) in one batch sorted by length,
                    append them to the interaction store, return `interaction.embedded`
                    events, one per configured model type, keyed by model key
    flush_due_in    how long the loop may wait for new records before the next flush
    commit_floor    the oldest offset still held by an open or unflushed conversation:
                    the loop never commits past it, so a crash rebuilds them from Kafka

A conversation emitted twice (after a crash) gets the same event id and the store keeps
one copy, so downstream sees it once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from driftloop_collector.assembler import (
    AssemblerConfig,
    CompletedConversation,
    ConversationAssembler,
)
from driftloop_collector.genesys import Piece, parse_raw
from driftloop_collector.settings import CollectorSettings
from driftloop_common.encoder import TextEncoder
from driftloop_common.events import (
    Event,
    InteractionEmbedded,
    InteractionEmbeddedEvent,
    ModelKey,
)
from driftloop_common.metrics import LoopMetrics
from driftloop_common.service import LOG_APPEND_TIME, Record
from driftloop_common.store import InteractionStore

log = logging.getLogger(__name__)
SERVICE = "collector"
_IDS = uuid.UUID("0c8f5a52-3d0e-4d61-8f2b-7a1c9e4b6d20")


class CollectorMetrics:
    def __init__(self, metrics: LoopMetrics) -> None:
        r = metrics.registry
        self.conversations = Counter(
            "collector_conversations_total",
            "Conversations emitted, by how they completed.",
            ["completion"],
            registry=r,
        )
        self.dropped = Counter(
            "collector_conversations_dropped_total",
            "Conversations dropped, by reason.",
            ["reason"],
            registry=r,
        )
        self.open = Gauge(
            "collector_open_conversations", "Conversations waiting for more pieces.", registry=r
        )
        self.embed_seconds = Histogram(
            "collector_embedding_seconds",
            "Time to embed one flush's batch.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


class Collector:
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
        self.metrics = CollectorMetrics(metrics)
        self.clock = clock
        self.assembler = ConversationAssembler(
            AssemblerConfig(
                wrapup_wait=timedelta(seconds=settings.wrapup_wait_s),
                settle=timedelta(seconds=settings.settle_s),
                max_wait=timedelta(seconds=settings.max_wait_s),
                max_open=settings.max_open,
                wrapup_labels=settings.wrapup_labels,
            )
        )
        self._ready: list[CompletedConversation] = []

    # ------------------------------------------------------------ the loop's hooks
    def decode(self, record: Record) -> Piece:
        return parse_raw(
            record.value or b"",
            partition=record.partition,
            offset=record.offset,
            languages=self.settings.languages,
            appended_at=(
                datetime.fromtimestamp(record.timestamp / 1000, UTC)
                if record.timestamp_type == LOG_APPEND_TIME
                else None
            ),
        )

    async def handle(self, piece: Piece) -> list[Event]:
        self._ready += self.assembler.add(piece, self.clock())
        return []

    async def flush(self) -> list[Event]:
        self._ready += self.assembler.expire(self.clock())
        for dropped in self.assembler.drain_dropped():
            self.metrics.dropped.labels(dropped.reason.value).inc()
            log.info("dropped conversation %s: %s", dropped.conversation_id, dropped.reason)
        self.metrics.open.set(self.assembler.open_conversations)
        if not self._ready:
            return []
        ready = self._ready[: self.settings.max_flush_conversations]  # the rest: next poll
        events = await asyncio.to_thread(self._embed_and_store, ready)
        del self._ready[: len(ready)]
        for conversation in ready:
            self.metrics.conversations.labels(conversation.completion.value).inc()
        return events

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

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Forget what came from lost partitions, open or waiting for a flush: their new
        owner reads it again from the committed offset."""
        lost = {tp.partition for tp in partitions}
        self.assembler.revoke(lost)
        self._ready = [c for c in self._ready if lost.isdisjoint(c.source_offsets)]

    # ------------------------------------------------------------ work
    def _embed_and_store(self, ready: list[CompletedConversation]) -> list[Event]:
        with self.metrics.embed_seconds.time():
            vectors = self.encoder.encode(
                [c.text for c in ready], batch_size=self.settings.encoder_batch_size
            )
        rows = [
            InteractionEmbedded(
                conversation_id=c.conversation_id,
                language=c.language,
                completed_at=c.completed_at,
                embedding=vector.tolist(),
                encoder=self.encoder.info,
                label=c.label,
                text=c.text,
                queue=c.queue,
                media_type=c.media_type,
            )
            for c, vector in zip(ready, vectors, strict=True)
        ]
        self.store.append(rows)
        return [
            InteractionEmbeddedEvent(
                event_id=(event_id := uuid.uuid5(_IDS, f"{row.conversation_id}:{model_type}")),
                correlation_id=event_id,
                producer=SERVICE,
                occurred_at=row.completed_at,
                model_key=ModelKey(model_type=model_type, language=row.language),
                payload=row,
            )
            for row in rows
            for model_type in self.settings.model_types
        ]
