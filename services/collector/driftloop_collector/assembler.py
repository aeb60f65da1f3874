"""Joins the pieces of one Genesys conversation into one finished interaction.

A pure, deterministic state machine: time comes in as `now` arguments (the service
passes its wall clock, tests pass fixed values), nothing here reads a clock or does I/O.

When a conversation is due (on the `now` clock):

    normalized piece              at once (it is a whole conversation)
    customer.end + wrapup         `settle` after the later of the two arrived
    customer.end, no wrapup       `wrapup_wait` after the end arrived (emitted unlabelled)
    no customer.end               `max_wait` after its last piece (emitted if it has text)
    more than `max_open` open     the least recently updated one, at once (evicted)

Text: the customer's final utterances in time order, joined by spaces. Pieces that
together exceed `max_text_bytes` (UTF-8) are cut to it at a character boundary, keeping
the beginning, and the conversation is emitted with `truncated` set: a long call is real
traffic with a valid label, and the encoder reads only its first 256 tokens anyway. (One
piece over the cap never gets here: parsing rejects it, `text_too_long`.)

`settle` is a short grace for final transcripts that trail the end and wrapup
events; it is what makes the output independent of the arrival order. A due
conversation without customer text is dropped with a reason (`drain_dropped()`),
never silently; so is a piece that arrives after its conversation was closed, which
never re-opens it (closed ids are remembered for `remember_closed`, at most
`max_remembered` of them).

Two clocks can make a conversation due. The service's (`now`): the waits above count
from when this consumer read the pieces. The broker's, for records Kafka stamped with
its append time (`PieceBase.appended_at`): the waits count from when Kafka took the
pieces, and the conversation is due once this consumer has read, in its partition, a
record appended after that — every piece appended before it has then been read. So a
backlog (after a restart, an outage, a burst) is not held back by waits that passed
long ago, and nothing that was in Kafka in time is declared late.

Crash safety: the state lives in memory only as a cache of Kafka. The service commits
a partition only below `min_pending_offset(partition)`, so after a crash or a
rebalance the pieces of every open conversation are read again and the state is
rebuilt. This needs all pieces of a conversation in one partition (key
`interactions.raw` by conversation id); `revoke()` forgets the conversations of
partitions this consumer lost.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, TypeVar

from driftloop_collector.genesys import (
    DEFAULT_MAX_TEXT_BYTES,
    EndPiece,
    NormalizedPiece,
    Piece,
    PieceBase,
    StartPiece,
    TranscriptPiece,
    Utterance,
    WrapupPiece,
)
from driftloop_common.contracts.errors import ConfigError

P = TypeVar("P", bound=PieceBase)


class Completion(enum.StrEnum):
    """Why a conversation was emitted (a small fixed set: safe as a metric label)."""

    NORMALIZED = "normalized"
    WRAPUP = "wrapup"
    WRAPUP_TIMEOUT = "wrapup_timeout"
    MAX_WAIT = "max_wait"
    EVICTED = "evicted"


class DropReason(enum.StrEnum):
    NO_TEXT = "no_text"  # due, but no final customer utterance arrived
    EVICTED = "evicted"  # pushed out by `max_open` before it had customer text
    LATE = "late"  # a piece for a conversation already emitted or dropped


@dataclass(frozen=True)
class AssemblerConfig:
    """How long to wait for the pieces of a conversation, and how much to hold.

    `wrapup_labels` maps Genesys wrap-up code ids to label names. Without it the code
    itself is the label; with it an unmapped code gives no label (the conversation
    still counts for drift, and `wrapup_code` keeps the id).
    """

    wrapup_wait: timedelta = timedelta(seconds=60)
    settle: timedelta = timedelta(seconds=5)
    max_wait: timedelta = timedelta(minutes=30)
    max_open: int = 10_000
    remember_closed: timedelta = timedelta(hours=2)
    max_remembered: int = 100_000
    wrapup_labels: Mapping[str, str] | None = None
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES

    def __post_init__(self) -> None:
        for name in ("wrapup_wait", "max_wait", "remember_closed"):
            if getattr(self, name) <= timedelta(0):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.settle < timedelta(0):
            raise ConfigError(f"settle must not be negative, got {self.settle}")
        if self.max_open < 1 or self.max_remembered < 0:
            raise ConfigError("max_open must be ≥ 1 and max_remembered ≥ 0")
        if self.max_text_bytes < 1:
            raise ConfigError(f"max_text_bytes must be ≥ 1, got {self.max_text_bytes}")


@dataclass(frozen=True)
class CompletedConversation:
    conversation_id: str
    text: str
    language: str
    completed_at: datetime
    label: str | None
    queue: str | None
    media_type: str | None
    source_offsets: dict[int, list[int]]  # partition → offsets of every piece it absorbed
    completion: Completion
    wrapup_code: str | None = None
    truncated: bool = False  # the text was cut to `max_text_bytes`

    @property
    def pieces(self) -> int:
        """How many records it was built from: a copy rebuilt from fewer is poorer."""
        return sum(len(offsets) for offsets in self.source_offsets.values())

    @property
    def first_offset(self) -> int:
        """The smallest source offset (a conversation's records share one partition)."""
        return min(o for offsets in self.source_offsets.values() for o in offsets)


@dataclass(frozen=True)
class Dropped:
    conversation_id: str
    reason: DropReason
    source_offsets: dict[int, list[int]]


class _Heard(NamedTuple):
    """One customer utterance and the record it came from (for deterministic dedup)."""

    coordinates: tuple[int, int]
    event_time: datetime
    utterance: Utterance


@dataclass
class _Marks:
    """When a conversation's pieces came, on one clock: the first and the latest piece,
    the first customer.end and the first wrap-up."""

    first: datetime
    last: datetime
    end: datetime | None = None
    wrapup: datetime | None = None

    def note(self, piece: Piece, at: datetime) -> None:
        self.first, self.last = min(self.first, at), max(self.last, at)
        if isinstance(piece, EndPiece):
            self.end = at if self.end is None else min(self.end, at)
        elif isinstance(piece, WrapupPiece):
            self.wrapup = at if self.wrapup is None else min(self.wrapup, at)

    def due(self, config: AssemblerConfig, normalized: bool) -> tuple[datetime, Completion]:
        if normalized:
            return self.first, Completion.NORMALIZED
        if self.end is not None and self.wrapup is not None:
            return max(self.end, self.wrapup) + config.settle, Completion.WRAPUP
        if self.end is not None:
            return self.end + config.wrapup_wait, Completion.WRAPUP_TIMEOUT
        return self.last + config.max_wait, Completion.MAX_WAIT


@dataclass
class _Conversation:
    read: _Marks  # on the service's clock, when this consumer read each piece
    appended: _Marks | None  # on the broker's clock, when Kafka appended them (if known)
    latest_event: datetime
    offsets: dict[int, set[int]] = field(default_factory=dict)
    utterances: dict[str, _Heard] = field(default_factory=dict)
    start: StartPiece | None = None
    end: EndPiece | None = None
    wrapup: WrapupPiece | None = None
    normalized: NormalizedPiece | None = None
    # When it is due on the service's clock and why, and on the broker's (None: a piece's
    # time is unknown); kept up to date by `absorb`, so a poll's `expire` only compares.
    when: datetime = field(init=False)
    how: Completion = field(init=False)
    when_in_kafka: datetime | None = field(init=False)

    def absorb(self, piece: Piece, now: datetime, config: AssemblerConfig) -> None:
        """Add a piece; duplicates resolve to the same state whatever the arrival order."""
        self.read.note(piece, now)
        if self.appended is not None:
            if piece.appended_at is None:
                self.appended = None  # one piece of unknown time: this clock says nothing
            else:
                self.appended.note(piece, piece.appended_at)  # compared with the log only
        self.latest_event = max(self.latest_event, piece.event_time)
        self.offsets.setdefault(piece.partition, set()).add(piece.offset)
        match piece:
            case TranscriptPiece():
                heard_at = (piece.partition, piece.offset)
                for u in piece.utterances:
                    known = self.utterances.get(u.utterance_id)
                    if known is None or heard_at < known.coordinates:
                        self.utterances[u.utterance_id] = _Heard(heard_at, piece.event_time, u)
            case StartPiece():
                self.start = piece if self.start is None else _earliest(self.start, piece)
            case EndPiece():
                self.end = piece if self.end is None else _latest(self.end, piece)
            case WrapupPiece():
                # After a transfer several agents wrap up; the last one has the outcome.
                self.wrapup = piece if self.wrapup is None else _latest(self.wrapup, piece)
            case NormalizedPiece():
                self.normalized = (
                    piece if self.normalized is None else _latest(self.normalized, piece)
                )
        whole = self.normalized is not None
        self.when, self.how = self.read.due(config, whole)
        self.when_in_kafka = None if self.appended is None else self.appended.due(config, whole)[0]

    def build(
        self,
        conversation_id: str,
        completion: Completion,
        offsets: dict[int, list[int]],
        config: AssemblerConfig,
    ) -> CompletedConversation | None:
        """The finished interaction, or None when there is no customer text."""
        if self.normalized is not None:
            raw = self.normalized.interaction
            text, truncated = _capped(raw.text, config.max_text_bytes)
            return CompletedConversation(
                conversation_id=conversation_id,
                text=text,
                language=raw.language,
                completed_at=raw.completed_at,
                label=raw.label,
                queue=raw.queue,
                media_type=raw.media_type,
                source_offsets=offsets,
                completion=completion,
                truncated=truncated,
            )
        # eventTime first: offsetMs restarts with each communication (e.g. after a transfer).
        heard = sorted(
            self.utterances.values(),
            key=lambda h: (h.event_time, h.utterance.offset_ms or 0, h.utterance.utterance_id),
        )
        if not heard:
            return None
        language = Counter(h.utterance.language for h in heard).most_common(1)[0][0]
        code = self.wrapup.code if self.wrapup is not None else None
        queue = self.end.queue if self.end is not None else None
        if queue is None and self.wrapup is not None:
            queue = self.wrapup.queue
        media = self.end.media_type if self.end is not None else None
        if media is None and self.start is not None:
            media = self.start.media_type
        labels = config.wrapup_labels
        text, truncated = _capped(" ".join(h.utterance.text for h in heard), config.max_text_bytes)
        return CompletedConversation(
            conversation_id=conversation_id,
            text=text,
            language=language,
            completed_at=self.end.event_time if self.end is not None else self.latest_event,
            label=code if labels is None or code is None else labels.get(code),
            queue=queue,
            media_type=media,
            source_offsets=offsets,
            completion=completion,
            wrapup_code=code,
            truncated=truncated,
        )


def _capped(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` cut to at most `max_bytes` of UTF-8 at a character boundary, and whether it
    was cut. (A string of n characters has at most 4n bytes: most need no encoding here.)"""
    if len(text) * 4 <= max_bytes:
        return text, False
    encoded = text.encode("utf-8", "surrogatepass")  # parsing let no surrogate through
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", "ignore"), True


def _earliest(a: P, b: P) -> P:
    return min(a, b, key=lambda p: (p.event_time, p.partition, p.offset))


def _latest(a: P, b: P) -> P:
    return max(a, b, key=lambda p: (p.event_time, -p.partition, -p.offset))


class ConversationAssembler:
    """Collects pieces per conversation id and emits each conversation once, when due."""

    def __init__(self, config: AssemblerConfig | None = None) -> None:
        self.config = config or AssemblerConfig()
        self._open: dict[str, _Conversation] = {}
        self._closed: dict[str, datetime] = {}  # id → when closed, oldest first
        self._dropped: list[Dropped] = []
        self._next_due: datetime | None = None
        # partition → the latest append time read there (records with a broker timestamp)
        self._watermarks: dict[int, datetime] = {}

    @property
    def open_conversations(self) -> int:
        return len(self._open)

    @property
    def next_due(self) -> datetime | None:
        """When `expire` next has work: never later than the earliest open conversation's
        due time (it may be earlier; `expire` then finds nothing and looks again)."""
        return self._next_due

    def add(self, piece: Piece, now: datetime) -> list[CompletedConversation]:
        """Absorb one piece; return its conversation if that is now due, and any evicted.

        Other conversations' timeouts fire in `expire`, which the service calls once per
        batch and on idle polls: `add` stays O(1) however many conversations are open.
        """
        _require_aware(now)
        self._forget_closed(now)
        cid = piece.conversation_id
        if cid in self._closed:
            self._dropped.append(Dropped(cid, DropReason.LATE, {piece.partition: [piece.offset]}))
            return []
        # Re-inserting keeps `_open` ordered from least to most recently updated.
        conversation = self._open.pop(cid, None) or _Conversation(
            read=_Marks(first=now, last=now),
            appended=(
                None
                if piece.appended_at is None
                else _Marks(first=piece.appended_at, last=piece.appended_at)
            ),
            latest_event=piece.event_time,
        )
        self._open[cid] = conversation
        conversation.absorb(piece, now, self.config)
        if piece.appended_at is not None:
            seen = self._watermarks.get(piece.partition)
            if seen is None or piece.appended_at > seen:
                self._watermarks[piece.partition] = piece.appended_at
        when = conversation.when
        if when > now and (self._next_due is None or when < self._next_due):
            self._next_due = when
        completed = (
            self._close(cid, conversation.how, now) if self._is_due(conversation, now) else []
        )
        while len(self._open) > self.config.max_open:
            completed += self._close(next(iter(self._open)), Completion.EVICTED, now)
        return completed

    def expire(self, now: datetime) -> list[CompletedConversation]:
        """Emit every conversation due at `now` (timeouts), in due order."""
        _require_aware(now)
        due = sorted((c.when, cid, c.how) for cid, c in self._open.items() if self._is_due(c, now))
        self._next_due = min((c.when for c in self._open.values() if c.when > now), default=None)
        completed = [done for _, cid, how in due for done in self._close(cid, how, now)]
        self._forget_closed(now)
        return completed

    def drain_dropped(self) -> list[Dropped]:
        """Conversations and pieces dropped since the last call (for metrics and logs)."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def min_pending_offset(self, partition: int) -> int | None:
        """The smallest offset still held for `partition`: commit only below it."""
        held = [min(c.offsets[partition]) for c in self._open.values() if partition in c.offsets]
        return min(held, default=None)

    def revoke(self, partitions: Collection[int]) -> int:
        """Forget open conversations with pieces in lost partitions; their new owner
        re-reads them from the committed offset. Returns how many were forgotten."""
        lost = [cid for cid, c in self._open.items() if not c.offsets.keys().isdisjoint(partitions)]
        for cid in lost:
            del self._open[cid]
        for partition in partitions:
            self._watermarks.pop(partition, None)
        return len(lost)

    def _is_due(self, conversation: _Conversation, now: datetime) -> bool:
        """Due on the service's clock (counted from when its pieces were read), or on the
        broker's: this consumer has read, in each of its partitions, a record Kafka appended
        after the conversation fell due, so every piece appended before that is in."""
        if conversation.when <= now:
            return True
        due = conversation.when_in_kafka
        if due is None:
            return False
        marks = self._watermarks
        return all(p in marks and marks[p] > due for p in conversation.offsets)

    def _close(
        self, cid: str, completion: Completion, now: datetime
    ) -> list[CompletedConversation]:
        conversation = self._open.pop(cid)
        self._closed[cid] = now
        offsets = {p: sorted(offs) for p, offs in sorted(conversation.offsets.items())}
        done = conversation.build(cid, completion, offsets, self.config)
        if done is None:
            reason = DropReason.EVICTED if completion is Completion.EVICTED else DropReason.NO_TEXT
            self._dropped.append(Dropped(cid, reason, offsets))
            return []
        return [done]

    def _forget_closed(self, now: datetime) -> None:
        horizon = now - self.config.remember_closed
        while self._closed:
            cid, closed_at = next(iter(self._closed.items()))
            if closed_at > horizon and len(self._closed) <= self.config.max_remembered:
                break
            del self._closed[cid]


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
