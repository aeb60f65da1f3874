"""Interactions as Kafka records for `interactions.raw`, in the forms the collector accepts."""

from __future__ import annotations

import enum
import heapq
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from driftloop_common.contracts.events import (
    InteractionRaw,
    InteractionRawEvent,
    ModelKey,
    ModelType,
)
from driftloop_synthetic.generator import Interaction
from driftloop_synthetic.genesys import NAMESPACE, conversation_messages

T = TypeVar("T")


class OutputFormat(enum.StrEnum):
    NORMALIZED = "normalized"
    """One `InteractionRawEvent` per interaction (for users who already have transcripts)."""
    GENESYS_EVENTBRIDGE = "genesys-eventbridge"
    """Several Genesys notifications per interaction, in Amazon EventBridge envelopes."""
    GENESYS_BARE = "genesys-bare"
    """The same notifications without the envelope (`topicName`, `eventBody`, …)."""


def to_raw_event(interaction: Interaction) -> InteractionRawEvent:
    """The normalized event; its id derives from the conversation id, so a replay of the
    same interaction is recognised as a duplicate downstream."""
    return InteractionRawEvent(
        event_id=uuid.uuid5(NAMESPACE, f"interaction.raw/{interaction.conversation_id}"),
        correlation_id=uuid.uuid5(NAMESPACE, f"correlation/{interaction.conversation_id}"),
        occurred_at=interaction.completed_at,
        producer="generator",
        model_key=ModelKey(model_type=ModelType.INTENT, language=interaction.language),
        payload=InteractionRaw(
            conversation_id=interaction.conversation_id,
            text=interaction.text,
            language=interaction.language,
            completed_at=interaction.completed_at,
            label=interaction.intent,
            queue=interaction.queue,
            media_type=interaction.media_type,
        ),
    )


def encode(interaction: Interaction, fmt: OutputFormat) -> list[bytes]:
    """The message values (JSON, UTF-8) of one interaction, in emission order."""
    if fmt is OutputFormat.NORMALIZED:
        return [to_raw_event(interaction).to_bytes()]
    messages = conversation_messages(interaction, envelope=fmt is OutputFormat.GENESYS_EVENTBRIDGE)
    return [json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode() for m in messages]


def kafka_records(
    interactions: Iterable[Interaction],
    fmt: OutputFormat = OutputFormat.GENESYS_EVENTBRIDGE,
    *,
    shuffle_window: int = 0,
    seed: int = 0,
) -> Iterator[tuple[bytes, bytes]]:
    """`(key, value)` pairs keyed by conversation id, so a conversation's pieces share a
    partition. With `shuffle_window` > 0 messages (pieces of one conversation included)
    arrive out of order, each at most that many places from where it was emitted."""
    records = (
        (interaction.conversation_id.encode(), value)
        for interaction in interactions
        for value in encode(interaction, fmt)
    )
    if shuffle_window <= 0:
        yield from records
    else:
        yield from shuffle_within(records, shuffle_window, np.random.default_rng(seed))


def shuffle_within(items: Iterable[T], window: int, rng: np.random.Generator) -> Iterator[T]:
    """Reorder a stream so that no item moves more than `window` places, in bounded memory.

    Item i is released in the order of the key i + U(0, window): everything before
    i - window has a smaller key and everything after i + window a larger one.
    """
    heap: list[tuple[float, int, T]] = []
    for i, item in enumerate(items):
        heapq.heappush(heap, (i + float(rng.uniform(0, window)), i, item))
        while heap and heap[0][0] <= i:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def message_key(message: Mapping[str, Any]) -> bytes:
    """The Kafka key (conversation id) of a message in any `OutputFormat`, e.g. read from a file."""
    body = message.get("detail", message).get("eventBody")
    if isinstance(body, Mapping) and "conversationId" in body:
        return str(body["conversationId"]).encode()
    payload = message.get("payload")
    if isinstance(payload, Mapping) and "conversation_id" in payload:
        return str(payload["conversation_id"]).encode()
    raise ValueError("message has neither eventBody.conversationId nor payload.conversation_id")
