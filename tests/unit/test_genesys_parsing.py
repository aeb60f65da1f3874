"""Genesys events on `interactions.raw` → typed pieces; unusable messages → PermanentError codes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop_collector.genesys import (
    EndPiece,
    NormalizedPiece,
    StartPiece,
    TranscriptPiece,
    Utterance,
    WrapupPiece,
    parse_raw,
)
from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    InteractionRaw,
    InteractionRawEvent,
    Prediction,
    PredictionEvent,
)
from tests.real_data import EVENTBRIDGE_EXAMPLES as EVENTBRIDGE

needs_real = pytest.mark.skipif(
    not EVENTBRIDGE.is_dir(),
    reason=f"Genesys EventBridge examples not found at {EVENTBRIDGE} (set DRIFTLOOP_REAL_DATA)",
)

CID = "2f7bf00a-0fc2-4d6a-9b56-92238191433e"
T_MS = 1649237504949
T = datetime(2022, 4, 6, 9, 31, 44, 949000, tzinfo=UTC)
T_NORMALIZED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


CODES = {
    "invalid_json",
    "unknown_shape",
    "unknown_topic",
    "schema",
    "unknown_language",
    "no_text",
    "unexpected_event_type",
    "unknown_event_type",
    "unencodable_text",
    "text_too_long",
    "event_time_out_of_range",
}


def parse(data: Any, **kw: Any):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_raw(raw, partition=3, offset=42, **kw)


def reject(data: Any, code: str, **kw: Any) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        parse(data, **kw)
    assert info.value.code == code, str(info.value)
    assert code in CODES
    assert str(info.value)
    return info.value


def notification(topic: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"topicName": topic, "version": "2", "eventBody": body, "metadata": {"x": "y"}}


def eventbridge(pattern: str, topic: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"version": "0", "detail-type": pattern, "detail": notification(topic, body)}


def detail(kind: str, cid: str = CID, **body: Any) -> dict[str, Any]:
    return notification(
        f"v2.detail.events.conversation.{cid}.{kind}",
        {"eventTime": T_MS, "conversationId": cid, **body},
    )


def result(uid: str, *alternatives: tuple[float, str], final: bool = True, **kw: Any) -> dict:
    return {
        "utteranceId": uid,
        "isFinal": final,
        "channel": kw.get("channel", "EXTERNAL"),
        "dialect": kw.get("dialect", "en-US"),
        "engineProvider": "GENESYS",
        "alternatives": [
            {"confidence": c, "offsetMs": 1000, "durationMs": 900, "transcript": t, "words": []}
            for c, t in alternatives
        ],
    }


def transcription(*results: dict, cid: str = CID) -> dict[str, Any]:
    return notification(
        f"v2.conversations.{cid}.transcription",
        {
            "eventTime": T_MS,
            "conversationId": cid,
            "communicationId": "comm-1",
            "transcripts": list(results),
        },
    )


def normalized(**payload: Any) -> dict[str, Any]:
    event = InteractionRawEvent(
        producer="test",
        model_key="intent/en-us",
        payload=InteractionRaw(
            conversation_id="conv-9",
            text="I want to cancel my order",
            language="en-us",
            completed_at=T_NORMALIZED,
            label="cancel_order",
        ),
    )
    data = json.loads(event.to_bytes())
    data["payload"].update(payload)
    return data


# ---------------------------------------------------------------- real EventBridge files


@needs_real
@pytest.mark.parametrize(
    "name",
    [
        "aws-event-bridge-conversation-end-event.json",
        "aws-event-bridge-conversation-end-event-no-external-contact-id.json",
    ],
)
def test_real_customer_end_event(name: str) -> None:
    piece = parse((EVENTBRIDGE / name).read_bytes())
    assert piece == EndPiece(
        conversation_id=CID, partition=3, offset=42, event_time=T, media_type="CHAT", queue=None
    )


@needs_real
def test_real_customer_start_event() -> None:
    piece = parse((EVENTBRIDGE / "aws-event-bridge-conversation-start-event.json").read_bytes())
    assert piece == StartPiece(
        conversation_id=CID,
        partition=3,
        offset=42,
        event_time=datetime(2022, 4, 6, 9, 30, 44, 949000, tzinfo=UTC),
        media_type="CHAT",
    )


@needs_real
def test_real_non_conversation_event_is_an_unknown_topic() -> None:
    error = reject(
        (EVENTBRIDGE / "aws-event-bridge-non-conversation-event.json").read_bytes(), "unknown_topic"
    )
    assert "v2.something.but.conversation.{id}.customer.start" in str(error)


@needs_real
def test_real_envelope_and_its_bare_notification_give_the_same_piece() -> None:
    data = json.loads((EVENTBRIDGE / "aws-event-bridge-conversation-end-event.json").read_bytes())
    assert parse(data) == parse(data["detail"])


# ---------------------------------------------------------------- shapes


def test_eventbridge_envelope_and_bare_notification() -> None:
    bare = detail("customer.end", mediaType="VOICE", queueId="q-1", direction="INBOUND")
    wrapped = eventbridge(
        "v2.detail.events.conversation.{id}.customer.end", bare["topicName"], bare["eventBody"]
    )
    expected = EndPiece(
        conversation_id=CID, partition=3, offset=42, event_time=T, media_type="VOICE", queue="q-1"
    )
    assert parse(bare) == expected
    assert parse(wrapped) == expected


def test_customer_start() -> None:
    assert parse(detail("customer.start", mediaType="CALLBACK")) == StartPiece(
        conversation_id=CID, partition=3, offset=42, event_time=T, media_type="CALLBACK"
    )


def test_wrapup_keeps_the_code_and_queue() -> None:
    piece = parse(detail("wrapup", wrapupCode="7c1b…id", queueId="q-2", wrapupNotes="n"))
    assert piece == WrapupPiece(
        conversation_id=CID, partition=3, offset=42, event_time=T, code="7c1b…id", queue="q-2"
    )


def test_transcription_keeps_final_customer_utterances_best_alternative() -> None:
    piece = parse(
        transcription(
            result("u1", (0.40, "I want to council"), (0.93, "I want to  cancel ")),
            result("u2", (0.99, "how can I help"), channel="INTERNAL"),
            result("u3", (0.95, "my ord"), final=False),
            result("u4", (0.80, "my order"), channel="external", dialect="EN-us"),
            result("u5"),  # final but no alternatives
            result("u6", (0.9, "   ")),  # final silence
        )
    )
    assert isinstance(piece, TranscriptPiece)
    assert (piece.conversation_id, piece.partition, piece.offset) == (CID, 3, 42)
    assert piece.event_time == T
    assert piece.utterances == (
        Utterance(utterance_id="u1", text="I want to cancel", language="en-us", offset_ms=1000),
        Utterance(utterance_id="u4", text="my order", language="en-us", offset_ms=1000),
    )


def test_best_alternative_tie_keeps_the_first() -> None:
    piece = parse(transcription(result("u1", (0.5, "first"), (0.5, "second"))))
    assert [u.text for u in piece.utterances] == ["first"]


def test_transcription_without_final_customer_utterance_is_an_empty_piece() -> None:
    piece = parse(
        transcription(
            result("u1", (0.9, "partial"), final=False),
            result("u2", (0.9, "agent"), channel="INTERNAL", dialect="fr-FR"),
        )
    )
    assert isinstance(piece, TranscriptPiece) and piece.utterances == ()


def test_status_only_transcription_message_is_an_empty_piece() -> None:
    message = transcription()
    del message["eventBody"]["transcripts"]
    message["eventBody"]["status"] = {"status": "SESSION_ENDED", "offsetMs": 1}
    assert parse(message).utterances == ()


def test_spanish_dialect() -> None:
    piece = parse(transcription(result("u1", (0.9, "quiero cancelar"), dialect="es-ES")))
    assert piece.utterances[0].language == "es-es"


def test_supported_languages_are_configurable() -> None:
    message = transcription(result("u1", (0.9, "je veux annuler"), dialect="fr-FR"))
    assert parse(message, languages={"fr-fr"}).utterances[0].language == "fr-fr"
    reject(message, "unknown_language")


def test_normalized_event_is_a_whole_conversation() -> None:
    piece = parse(normalized(language="EN-US", completed_at="2026-11-24T13:00:00+01:00"))
    assert isinstance(piece, NormalizedPiece)
    assert (piece.conversation_id, piece.partition, piece.offset) == ("conv-9", 3, 42)
    assert piece.event_time == piece.interaction.completed_at == T_NORMALIZED
    assert piece.event_time.utcoffset() == timedelta(0)
    assert piece.interaction.language == "en-us"
    assert piece.interaction.label == "cancel_order"


# ---------------------------------------------------------------- rejected


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "unknown_shape"),
        ({"hello": "world"}, "unknown_shape"),
        (notification("v2.users.u-1.presence", {"eventTime": T_MS}), "unknown_topic"),
        (notification(f"v2.detail.events.conversation.{CID}.acw", {}), "unknown_topic"),
        (
            eventbridge(
                "v2.detail.events.conversation.{id}.customer.start",
                f"v2.detail.events.conversation.{CID}.customer.end",
                {"eventTime": T_MS, "conversationId": CID},
            ),
            "schema",
        ),
        ({"detail-type": "v2.detail.events.conversation.{id}.customer.end"}, "schema"),
        ({"topicName": f"v2.conversations.{CID}.transcription", "eventBody": "x"}, "schema"),
        (detail("customer.end", eventTime="yesterday"), "schema"),
        (detail("wrapup"), "schema"),
        (
            notification(
                f"v2.detail.events.conversation.{CID}.customer.end",
                {"eventTime": T_MS, "conversationId": "someone-else"},
            ),
            "schema",
        ),
        (transcription(result("u1", (0.9, "bonjour"), dialect="fr-FR")), "unknown_language"),
        (transcription(result("u1", (0.9, "hello"), dialect=None)), "unknown_language"),
        (normalized(text="   "), "no_text"),
        (normalized(language="de-de"), "unknown_language"),
        (normalized(completed_at="2026-11-24T12:00:00"), "schema"),
        (
            PredictionEvent(
                producer="test",
                model_key="intent/en-us",
                payload=Prediction(version=1, label="x", confidence=0.5, served_by="predictor"),
            ).to_bytes(),
            "unexpected_event_type",
        ),
        ({**normalized(), "event_type": "interaction.cooked"}, "unknown_event_type"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unusable_messages_are_rejected_with_a_code(data: Any, code: str) -> None:
    reject(data, code)


def test_rejection_names_the_bad_field() -> None:
    error = reject(detail("wrapup"), "schema")
    assert "wrapupCode" in str(error)


# ---------------------------------------------------------------- poison text and times


LONE = "\udfff"  # json.dumps writes it as the escape "\udfff": valid JSON, not valid UTF-8


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (transcription(result("u1", (0.9, f"my card {LONE} was stolen"))), "unencodable_text"),
        (transcription(result("u1", (0.9, "ok")), result("u2", (0.9, LONE))), "unencodable_text"),
        (detail("customer.end", queueId=LONE), "unencodable_text"),
        (detail("wrapup", wrapupCode="w", queueId=LONE), "unencodable_text"),
        (detail("customer.start", mediaType=LONE), "unencodable_text"),
        # pydantic already refuses it in strings with a length constraint
        (detail("wrapup", wrapupCode=f"w{LONE}"), "schema"),
        (detail("customer.end", cid=f"c{LONE}"), "schema"),
        (transcription(result(f"u{LONE}", (0.9, "hello"))), "schema"),
    ],
    ids=[
        "utterance",
        "second-utterance",
        "end-queue",
        "wrapup-queue",
        "media-type",
        "wrapup-code",
        "conversation-id",
        "utterance-id",
    ],
)
def test_a_lone_surrogate_in_a_kept_string_is_rejected(message: dict, code: str) -> None:
    raw = json.dumps(message).encode()
    assert b"\\udfff" in raw  # the escape, as a producer would send it
    error = reject(raw, code)
    str(error).encode("utf-8")  # the reason itself fits a Kafka header
    if code == "unencodable_text":
        assert "cannot be encoded as UTF-8" in str(error)


def test_a_lone_surrogate_in_a_normalized_interaction_is_invalid_json() -> None:
    error = reject(json.dumps(normalized(text=f"cancel {LONE}")).encode(), "invalid_json")
    assert "surrogate" in str(error)


def test_a_valid_surrogate_pair_escape_is_an_ordinary_character() -> None:
    raw = json.dumps(transcription(result("u1", (0.9, "thanks \U0001f600")))).encode()
    assert b"\\ud83d\\ude00" in raw
    assert parse(raw).utterances[0].text == "thanks \U0001f600"


def test_one_message_over_the_text_cap_is_rejected() -> None:
    # 64 KiB is the default cap: far more than the 256 tokens the encoder reads
    huge = "word " * 14_000  # 70,000 bytes in one utterance
    reject(transcription(result("u1", (0.9, huge))), "text_too_long")
    reject(
        transcription(*(result(f"u{i}", (0.9, huge[:35_000])) for i in range(2))), "text_too_long"
    )
    reject(normalized(text=huge), "text_too_long")
    assert parse(transcription(result("u1", (0.9, huge[:60_000])))).utterances


def test_the_text_cap_counts_utf8_bytes_and_is_configurable() -> None:
    from driftloop_collector.genesys import ParseLimits

    limits = ParseLimits(max_text_bytes=20)
    assert parse(transcription(result("u1", (0.9, "é" * 10))), limits=limits)  # 20 bytes
    reject(transcription(result("u1", (0.9, "é" * 11))), "text_too_long", limits=limits)
    # two utterances and the space between them: 9 + 1 + 10
    assert parse(
        transcription(result("a", (0.9, "x" * 9)), result("b", (0.9, "y" * 10))), limits=limits
    )
    reject(
        transcription(result("a", (0.9, "x" * 10)), result("b", (0.9, "y" * 10))),
        "text_too_long",
        limits=limits,
    )


def at(moment: datetime) -> dict[str, Any]:
    return detail("customer.end", eventTime=int(moment.timestamp() * 1000))


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(days=-401), False),
        (timedelta(days=-399), True),
        (timedelta(hours=23), True),
        (timedelta(hours=25), False),
    ],
)
def test_event_times_far_from_the_broker_time_are_rejected(
    offset: timedelta, accepted: bool
) -> None:
    broker = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    message = at(broker + offset)
    if accepted:
        assert parse(message, appended_at=broker).event_time == broker + offset
    else:
        error = reject(message, "event_time_out_of_range", appended_at=broker)
        assert "eventTime" in str(error)


def test_a_completed_at_in_year_9999_is_rejected() -> None:
    broker = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    reject(
        normalized(completed_at="9999-12-31T00:00:00+00:00"),
        "event_time_out_of_range",
        appended_at=broker,
    )


def test_without_a_broker_time_event_times_are_judged_by_the_service_clock() -> None:
    clock = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    reject(at(clock + timedelta(days=2)), "event_time_out_of_range", now=clock)
    assert parse(at(clock - timedelta(days=2)), now=clock)
    # the broker's time wins over the service's clock when the record has one
    assert parse(at(clock + timedelta(days=2)), now=clock, appended_at=clock + timedelta(days=2))
    assert parse(at(T))  # no time to judge by: not checked (replays of old examples)


VALID = [
    transcription(result("u1", (0.9, "hello"), (0.2, "yellow"))),
    detail("customer.end", mediaType="VOICE"),
    detail("wrapup", wrapupCode="w"),
    eventbridge(
        "v2.detail.events.conversation.{id}.customer.start",
        f"v2.detail.events.conversation.{CID}.customer.start",
        {"eventTime": T_MS, "conversationId": CID},
    ),
    normalized(),
]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**20, -(10**20), 2**63])  # epoch ms beyond any datetime
    | st.floats()
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_any_damage_gives_a_piece_or_a_permanent_error(data: st.DataObject) -> None:
    """Anything else would crash the service loop instead of dead-lettering the message."""
    message = copy.deepcopy(data.draw(st.sampled_from(VALID)))
    node: Any = message
    while True:
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        if isinstance(node[key], dict | list) and node[key] and data.draw(st.booleans()):
            node = node[key]
            continue
        node[key] = data.draw(JSON)
        break
    try:
        parse(message)
    except PermanentError as error:
        assert error.code in CODES
