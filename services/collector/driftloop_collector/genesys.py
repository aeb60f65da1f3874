"""Genesys Cloud events on `interactions.raw`, parsed into typed pieces of a conversation.

One Kafka message becomes one piece, or a `PermanentError` whose `code` names why
(`invalid_json`, `unknown_shape`, `unknown_topic`, `schema`, `unknown_language`,
`no_text`, `unencodable_text`, `text_too_long`, `event_time_out_of_range`, and the codes
of `decode_event`). Accepted shapes:

    EventBridge  {"detail-type": "v2.detail.events.conversation.{id}.customer.end",
                  "detail": {"topicName": "v2.detail…<uuid>.customer.end", "eventBody": {…}}}
    bare         {"topicName": "v2.conversations.<uuid>.transcription", "eventBody": {…}}
    normalized   an `InteractionRawEvent` envelope (`"event_type": "interaction.raw"`)

Topics: `v2.conversations.{id}.transcription` and the conversation detail events
`v2.detail.events.conversation.{id}.customer.start | customer.end | wrapup`.

Transcripts keep only what a model is trained and served on: final utterances of the
customer (channel EXTERNAL), best alternative each. Agent (INTERNAL) speech is dropped:
it often states the outcome ("I've cancelled your order"), which would leak the label
into the features, and the predictor never sees it at serving time. A transcription
message without any final customer utterance (interim results, status-only messages,
agent-only turns) is a valid piece with no utterances, not an error.

What a piece may hold (`ParseLimits`, from the collector's settings):

    unencodable_text         a kept string (utterance, queue, media type) that is not valid
                             Unicode: JSON's `"\udfff"` (a lone surrogate) parses, but no
                             UTF-8 writer (Parquet, Kafka) takes it; in ids and wrap-up
                             codes pydantic refuses it already (`schema`)
    text_too_long            one message's customer text over `max_text_bytes` (UTF-8): a
                             transcription message holds seconds of speech, a normalized
                             interaction is one conversation; the encoder reads 256 tokens
                             (pieces that are each short but together longer are cut to the
                             cap when assembled, see the assembler)
    event_time_out_of_range  an event time more than `max_age` before or `max_ahead` after
                             the time it is judged against (the broker's append time when
                             the record has one, else the service's clock): one year-9999
                             `completed_at` would shrink a drift window to one row

The normalized path gets no lone surrogate this far: pydantic's JSON parser rejects
them (`invalid_json`).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    InteractionRaw,
    InteractionRawEvent,
    decode_event,
    describe_validation_error,
)

M = TypeVar("M", bound=BaseModel)

DEFAULT_LANGUAGES: frozenset[str] = frozenset({"en-us", "es-es"})
DEFAULT_MAX_TEXT_BYTES = 65_536
"""A conversation's text is at most this long (UTF-8); the encoder reads its first 256
tokens (a few KB), the rest is kept for people and for fine-tuning."""


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what one message may hold (see the module docstring for the codes)."""

    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    max_age: timedelta = timedelta(days=400)
    max_ahead: timedelta = timedelta(days=1)

    def check_time(self, event_time: datetime, now: datetime | None, what: str) -> None:
        if now is None:
            return
        if event_time < now - self.max_age or event_time > now + self.max_ahead:
            raise PermanentError(
                f"{what} {event_time.isoformat()} is outside the accepted range around "
                f"{now.isoformat()} (at most {self.max_age.days} days before, "
                f"{self.max_ahead} after)",
                code="event_time_out_of_range",
            )


DEFAULT_LIMITS = ParseLimits()


class Topic(enum.StrEnum):
    """The Genesys topic patterns the collector understands (EventBridge's `detail-type`)."""

    TRANSCRIPTION = "v2.conversations.{id}.transcription"
    CUSTOMER_START = "v2.detail.events.conversation.{id}.customer.start"
    CUSTOMER_END = "v2.detail.events.conversation.{id}.customer.end"
    WRAPUP = "v2.detail.events.conversation.{id}.wrapup"


_TOPIC_PATTERNS = [
    (re.compile(re.escape(t.value).replace(r"\{id\}", r"(?P<id>[^.{}]+)")), t) for t in Topic
]
_PATTERN_NAMES = frozenset(t.value for t in Topic)


# ---------------------------------------------------------------- pieces


@dataclass(frozen=True, kw_only=True, slots=True)
class PieceBase:
    """Where a piece came from (its Kafka record) and which conversation it belongs to.

    `appended_at` is when the broker appended the record, known only for topics whose
    records carry the broker's time (`message.timestamp.type=LogAppendTime`): a
    producer's own timestamps need not increase along a partition."""

    conversation_id: str
    partition: int
    offset: int
    event_time: datetime
    appended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Utterance:
    utterance_id: str
    text: str
    language: str
    offset_ms: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TranscriptPiece(PieceBase):
    """Final customer utterances of one transcription message (possibly none)."""

    utterances: tuple[Utterance, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class StartPiece(PieceBase):
    media_type: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class EndPiece(PieceBase):
    """The customer left: the conversation's text is complete, its label may follow."""

    media_type: str | None
    queue: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class WrapupPiece(PieceBase):
    """The agent's wrap-up code: the label source (a Genesys id unless mapped)."""

    code: str
    queue: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class NormalizedPiece(PieceBase):
    """A whole conversation in driftloop's own form: complete by itself."""

    interaction: InteractionRaw


Piece = TranscriptPiece | StartPiece | EndPiece | WrapupPiece | NormalizedPiece


# ---------------------------------------------------------------- Genesys bodies


class _GenesysModel(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class _Notification(_GenesysModel):
    topic_name: str
    event_body: dict[str, Any]


class _EventBridge(_GenesysModel):
    detail_type: str = Field(alias="detail-type")
    detail: _Notification


class _Alternative(_GenesysModel):
    confidence: float = 0.0
    offset_ms: int | None = None
    transcript: str = ""


class _Transcript(_GenesysModel):
    utterance_id: str = Field(min_length=1)
    is_final: bool
    channel: str
    dialect: str | None = None
    alternatives: list[_Alternative] = []


_YEAR_10000_MS = 253_402_300_800_000


class _Body(_GenesysModel):
    event_time: int = Field(ge=0, lt=_YEAR_10000_MS)  # epoch milliseconds
    conversation_id: str = Field(min_length=1)


class _TranscriptionBody(_Body):
    transcripts: list[_Transcript] = []


class _DetailBody(_Body):
    media_type: str | None = None
    queue_id: str | None = None


class _WrapupBody(_Body):
    wrapup_code: str = Field(min_length=1)
    queue_id: str | None = None


_BODIES: dict[Topic, type[_Body]] = {
    Topic.TRANSCRIPTION: _TranscriptionBody,
    Topic.CUSTOMER_START: _DetailBody,
    Topic.CUSTOMER_END: _DetailBody,
    Topic.WRAPUP: _WrapupBody,
}


# ---------------------------------------------------------------- parsing


def parse_raw(
    value: bytes,
    *,
    partition: int,
    offset: int,
    languages: Collection[str] = DEFAULT_LANGUAGES,
    appended_at: datetime | None = None,
    now: datetime | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> Piece:
    """One `interactions.raw` message → one piece; `PermanentError` (with a code) if unusable.

    `languages` are lower-case tags (`en-us`); anything else is `unknown_language`,
    because no model exists to serve or train on it. Event times are judged against
    `appended_at` (the broker's clock) when given, else against `now` (the service's
    clock); with neither they are not range-checked.
    """
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:  # also bad UTF-8 and absurd nesting
        raise PermanentError(f"not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise PermanentError(
            f"expected a JSON object, got {type(data).__name__}", code="unknown_shape"
        )
    where = {"partition": partition, "offset": offset, "appended_at": appended_at}
    now = appended_at if appended_at is not None else now

    if "event_type" in data:
        return _normalized(value, languages, where, now, limits)
    if "detail-type" in data or "detail" in data:
        envelope = _validate(_EventBridge, data, "EventBridge envelope")
        if envelope.detail_type not in _PATTERN_NAMES:
            raise PermanentError(
                f"unknown topic {envelope.detail_type!r} (detail-type)", code="unknown_topic"
            )
        topic = _topic(envelope.detail.topic_name)
        if topic is None or topic[0] != envelope.detail_type:
            raise PermanentError(
                f"detail.topicName {envelope.detail.topic_name!r} does not match "
                f"detail-type {envelope.detail_type!r}",
                code="schema",
            )
        notification = envelope.detail
    elif "topicName" in data:
        notification = _validate(_Notification, data, "notification")
        topic = _topic(notification.topic_name)
        if topic is None:
            raise PermanentError(f"unknown topic {notification.topic_name!r}", code="unknown_topic")
    else:
        raise PermanentError(
            "neither an EventBridge event (detail-type), a Genesys notification (topicName) "
            "nor a driftloop event (event_type)",
            code="unknown_shape",
        )

    kind, topic_id = topic
    body = _validate(_BODIES[kind], notification.event_body, f"{kind.value} eventBody")
    if body.conversation_id != topic_id:
        raise PermanentError(
            f"eventBody.conversationId {body.conversation_id!r} differs from the topic's "
            f"conversation id {topic_id!r}",
            code="schema",
        )
    event_time = datetime.fromtimestamp(body.event_time / 1000, UTC)
    limits.check_time(event_time, now, "eventBody.eventTime")
    base = {**where, "conversation_id": body.conversation_id, "event_time": event_time}
    if isinstance(body, _TranscriptionBody):
        return TranscriptPiece(**base, utterances=_customer_utterances(body, languages, limits))
    if isinstance(body, _WrapupBody):
        _utf8_size(body.queue_id, "eventBody.queueId")
        return WrapupPiece(**base, code=body.wrapup_code, queue=body.queue_id)
    assert isinstance(body, _DetailBody)
    _utf8_size(body.media_type, "eventBody.mediaType")
    if kind is Topic.CUSTOMER_END:
        _utf8_size(body.queue_id, "eventBody.queueId")
        return EndPiece(**base, media_type=body.media_type, queue=body.queue_id)
    return StartPiece(**base, media_type=body.media_type)


def _normalized(
    value: bytes,
    languages: Collection[str],
    where: dict[str, Any],
    now: datetime | None,
    limits: ParseLimits,
) -> Piece:
    event = decode_event(value, expected=(InteractionRawEvent,))
    assert isinstance(event, InteractionRawEvent)
    interaction = event.payload
    if not interaction.text.strip():
        raise PermanentError("payload.text is blank", code="no_text")
    language = _supported(interaction.language, languages)
    try:
        completed_at = interaction.completed_at.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00
        raise PermanentError(f"payload.completed_at: {exc}", code="schema") from exc
    limits.check_time(completed_at, now, "payload.completed_at")
    _check_text_size(_utf8_size(interaction.text, "payload.text"), limits, "payload.text")
    return NormalizedPiece(
        **where,
        conversation_id=interaction.conversation_id,
        event_time=completed_at,
        interaction=interaction.model_copy(
            update={"language": language, "completed_at": completed_at}
        ),
    )


def _customer_utterances(
    body: _TranscriptionBody, languages: Collection[str], limits: ParseLimits
) -> tuple[Utterance, ...]:
    kept = []
    size = 0
    for result in body.transcripts:
        if not result.is_final or result.channel.upper() != "EXTERNAL" or not result.alternatives:
            continue
        best = max(result.alternatives, key=lambda a: a.confidence)  # first one on ties
        text = " ".join(best.transcript.split())
        if not text:
            continue  # a final result for silence or noise
        if result.dialect is None:
            raise PermanentError(
                f"utterance {result.utterance_id!r} has no dialect", code="unknown_language"
            )
        try:
            size += len(text.encode("utf-8")) + 1  # and a space between utterances
        except UnicodeEncodeError as exc:
            raise _unencodable(f"utterance {result.utterance_id!r}", text, exc) from exc
        kept.append(
            Utterance(
                utterance_id=result.utterance_id,
                text=text,
                language=_supported(result.dialect, languages),
                offset_ms=best.offset_ms,
            )
        )
    _check_text_size(size - 1, limits, "the customer utterances of this message")
    return tuple(kept)


def _utf8_size(text: str | None, what: str) -> int:
    """The length of `text` in UTF-8; `unencodable_text` if it has none (a lone surrogate)."""
    if text is None:
        return 0
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _unencodable(what, text, exc) from exc


def _unencodable(what: str, text: str, exc: UnicodeEncodeError) -> PermanentError:
    return PermanentError(
        f"{what} cannot be encoded as UTF-8: {exc.reason} at character {exc.start} "
        f"({text[exc.start : exc.end]!a}: a lone surrogate escape in the JSON?)",
        code="unencodable_text",
    )


def _check_text_size(size: int, limits: ParseLimits, what: str) -> None:
    if size > limits.max_text_bytes:
        raise PermanentError(
            f"{what}: {size} bytes of text, more than the {limits.max_text_bytes} accepted "
            "for a whole conversation",
            code="text_too_long",
        )


def _supported(tag: str, languages: Collection[str]) -> str:
    language = tag.strip().lower().replace("_", "-")
    if language not in languages:
        raise PermanentError(
            f"language {tag!r} is not supported (supported: {', '.join(sorted(languages))})",
            code="unknown_language",
        )
    return language


def _topic(name: str) -> tuple[Topic, str] | None:
    for pattern, topic in _TOPIC_PATTERNS:
        if match := pattern.fullmatch(name):
            return topic, match["id"]
    return None


def _validate(model: type[M], data: Any, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PermanentError(f"{what}: {describe_validation_error(exc)}", code="schema") from exc
