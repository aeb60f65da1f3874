"""One interaction as the Genesys Cloud notifications a contact center would stream to Kafka.

A conversation becomes several messages, in the order Genesys emits them:

1. transcription notifications (`v2.conversations.{id}.transcription`), one per utterance:
   the customer's text (channel EXTERNAL) split into 1-3 final utterances, sometimes an
   agent greeting (INTERNAL) first, sometimes a non-final partial of the first customer
   utterance, which consumers must ignore;
2. `v2.detail.events.conversation.{id}.customer.end` when the customer leaves;
3. `v2.detail.events.conversation.{id}.wrapup` when the agent files the wrap-up code,
   which is the intent (our label).

To get the customer's text back, join the transcripts of the final EXTERNAL utterances,
ordered by `offsetMs`, with single spaces. Each message is either wrapped in the Amazon
EventBridge envelope (what Genesys's EventBridge integration delivers) or a bare
notification (what the notification API delivers).

Ids and timings come from a generator seeded by the conversation id, so one interaction
always renders the same messages.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from driftloop_synthetic.generator import LEXICONS, QUEUES, Interaction, epoch_ms
from driftloop_synthetic.lexicon import expand, pick

TRANSCRIPTION_TOPIC = "v2.conversations.{id}.transcription"
CUSTOMER_END_TOPIC = "v2.detail.events.conversation.{id}.customer.end"
WRAPUP_TOPIC = "v2.detail.events.conversation.{id}.wrapup"

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "synthetic.driftloop")
QUEUE_IDS: dict[str, str] = {name: str(uuid.uuid5(NAMESPACE, f"queue/{name}")) for name in QUEUES}
"""Genesys events name queues by id only; this maps our queue names to stable ids."""
AGENT_IDS: tuple[str, ...] = tuple(str(uuid.uuid5(NAMESPACE, f"agent/{i}")) for i in range(40))
DEFAULT_ORG_ID = str(uuid.uuid5(NAMESPACE, "org"))

_ENGINE_ID = "genesys-native-v2"


@dataclass(frozen=True)
class _Media:
    genesys: str
    provider: str
    median_handle_s: float


_MEDIA = {
    "voice": _Media("VOICE", "Edge", 240),
    "chat": _Media("CHAT", "PureCloud Webchat v2", 420),
    "message": _Media("MESSAGE", "PureCloud Messaging", 900),
    "email": _Media("EMAIL", "PureCloud Email", 1800),
}


@dataclass(frozen=True)
class _Utterance:
    utterance_id: str
    channel: str
    text: str
    offset_ms: int
    duration_ms: int
    is_final: bool = True


def conversation_messages(
    interaction: Interaction, *, envelope: bool = True, org_id: str = DEFAULT_ORG_ID
) -> list[dict[str, Any]]:
    """Every notification of one conversation, in emission order (see the module docstring)."""
    rng = np.random.default_rng(
        int.from_bytes(hashlib.sha256(interaction.conversation_id.encode()).digest()[:8])
    )
    media = _MEDIA[interaction.media_type]
    lexicon = LEXICONS[interaction.language]
    cid = interaction.conversation_id

    ids = _ids(rng)
    utterances = _utterances(interaction, rng, ids)
    speech_end = max(u.offset_ms + u.duration_ms for u in utterances)
    handle_ms = int(rng.lognormal(math.log(media.median_handle_s * 1000), 0.5))
    interacting_ms = max(handle_ms, speech_end + 10_000)
    end_ms = epoch_ms(interaction.completed_at)
    session_start = end_ms - interacting_ms
    transcription_start = session_start + int(rng.integers(0, 2000))
    communication_id, customer_id, customer_session = next(ids), next(ids), next(ids)
    agent_participant, agent_session = next(ids), next(ids)
    queue_id = QUEUE_IDS[interaction.queue]
    confidence = 1.0 if interaction.media_type != "voice" else float(rng.uniform(0.78, 0.97))

    latency_ms = int(rng.integers(150, 900))
    messages: list[tuple[int, str, dict[str, Any]]] = []
    for u in utterances:
        event_time = transcription_start + u.offset_ms + u.duration_ms + latency_ms
        body = {
            "eventTime": event_time,
            "conversationId": cid,
            "communicationId": communication_id,
            "sessionStartTimeMs": session_start,
            "transcriptionStartTimeMs": transcription_start,
            "transcripts": [
                {
                    "utteranceId": u.utterance_id,
                    "isFinal": u.is_final,
                    "channel": u.channel,
                    "dialect": lexicon.dialect,
                    "engineProvider": "GENESYS",
                    "engineId": _ENGINE_ID,
                    "alternatives": [_alternative(u, confidence, rng)],
                }
            ],
        }
        messages.append((event_time, TRANSCRIPTION_TOPIC, body))
    messages.sort(key=lambda m: m[0])  # stable: a partial stays before its final
    messages.append(
        (
            end_ms,
            CUSTOMER_END_TOPIC,
            {
                "eventTime": end_ms,
                "conversationId": cid,
                "participantId": customer_id,
                "sessionId": customer_session,
                "mediaType": media.genesys,
                "provider": media.provider,
                "direction": "INBOUND",
                "interactingDurationMs": interacting_ms,
                "conversationExternalContactIds": [],
                "queueId": queue_id,
            },
        )
    )
    wrapup_ms = int(rng.integers(5_000, 120_000))
    messages.append(
        (
            end_ms + wrapup_ms,
            WRAPUP_TOPIC,
            {
                "eventTime": end_ms + wrapup_ms,
                "conversationId": cid,
                "participantId": agent_participant,
                "sessionId": agent_session,
                "queueId": queue_id,
                "userId": AGENT_IDS[int(rng.integers(len(AGENT_IDS)))],
                "wrapupCode": interaction.intent,
                "wrapupDurationMs": wrapup_ms,
                "mediaType": media.genesys,
                "direction": "INBOUND",
            },
        )
    )
    return [
        _notification(topic, cid, body, rng, ids, envelope, org_id) for _, topic, body in messages
    ]


def _utterances(
    interaction: Interaction, rng: np.random.Generator, ids: Iterator[str]
) -> list[_Utterance]:
    """Agent greeting (maybe), then the customer's text in 1-3 final parts, plus a partial."""
    ms_per_word = float(rng.uniform(280, 450))
    cursor = int(rng.integers(300, 1500))
    utterances = []

    def say(channel: str, text: str) -> _Utterance:
        nonlocal cursor
        u = _Utterance(next(ids), channel, text, cursor, _duration(text, ms_per_word))
        cursor += u.duration_ms + int(rng.integers(300, 2500))
        utterances.append(u)
        return u

    if rng.random() < 0.6:
        lexicon = LEXICONS[interaction.language]
        say("INTERNAL", expand(pick(lexicon.agent_lines, rng), rng, lexicon.slots))
    parts = _split(interaction.text, int(rng.integers(1, 4)), rng)
    first = say("EXTERNAL", parts[0])
    for part in parts[1:]:
        say("EXTERNAL", part)
    words = first.text.split(" ")
    if len(words) > 1 and rng.random() < 0.35:
        prefix = " ".join(words[: int(rng.integers(1, len(words)))])
        utterances.insert(
            utterances.index(first),
            _Utterance(
                first.utterance_id,
                "EXTERNAL",
                prefix,
                first.offset_ms,
                _duration(prefix, ms_per_word),
                is_final=False,
            ),
        )
    return utterances


def _split(text: str, parts: int, rng: np.random.Generator) -> list[str]:
    """Cut `text` at word boundaries into at most `parts` pieces that rejoin with spaces."""
    words = text.split(" ")
    parts = min(parts, len(words))
    cuts = sorted(rng.choice(np.arange(1, len(words)), size=parts - 1, replace=False).tolist())
    bounds = [0, *cuts, len(words)]
    return [" ".join(words[a:b]) for a, b in itertools.pairwise(bounds)]


def _duration(text: str, ms_per_word: float) -> int:
    return max(400, int(len(text.split()) * ms_per_word))


def _alternative(u: _Utterance, confidence: float, rng: np.random.Generator) -> dict[str, Any]:
    tokens = u.text.split()
    shares = rng.uniform(0.6, 1.4, size=len(tokens))
    spans = (shares / shares.sum() * u.duration_ms).astype(int)
    starts = u.offset_ms + np.concatenate(([0], np.cumsum(spans)[:-1]))
    word_conf = np.clip(
        rng.normal(confidence, 0.04 if confidence < 1 else 0.0, len(tokens)), 0.3, 1
    )
    words = [
        {
            "confidence": round(float(c), 3),
            "offsetMs": int(start),
            "durationMs": int(span),
            "word": token,
        }
        for token, start, span, c in zip(tokens, starts, spans, word_conf, strict=True)
    ]
    return {
        "confidence": round(float(word_conf.mean()), 3),
        "offsetMs": u.offset_ms,
        "durationMs": u.duration_ms,
        "transcript": u.text,
        "words": words,
    }


def _notification(
    topic_pattern: str,
    conversation_id: str,
    body: dict[str, Any],
    rng: np.random.Generator,
    ids: Iterator[str],
    envelope: bool,
    org_id: str,
) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "topicName": topic_pattern.replace("{id}", conversation_id),
        "version": "2",
        "eventBody": body,
        "metadata": {"CorrelationId": next(ids)},
    }
    if not envelope:
        return detail
    sent_ms = body["eventTime"] + int(rng.integers(5, 400))
    received_ms = sent_ms + int(rng.integers(50, 2000))
    return {
        "version": "0",
        "id": next(ids),
        "detail-type": topic_pattern,
        "source": f"aws.partner/genesys.com/cloud/{org_id}/driftloop",
        "account": "123456789012",
        "time": _iso(received_ms // 1000 * 1000),  # EventBridge keeps whole seconds
        "region": "us-east-1",
        "resources": [],
        "detail": {**detail, "timestamp": _iso(sent_ms)},
    }


def _ids(rng: np.random.Generator) -> Iterator[str]:
    """Random UUIDs, drawn 16 at a time (one draw per id is slow in numpy)."""
    while True:
        raw = rng.bytes(256)
        for i in range(0, 256, 16):
            yield str(uuid.UUID(bytes=raw[i : i + 16], version=4))


def _iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms // 1000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"
