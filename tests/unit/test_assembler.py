"""The conversation assembler: completion rules, order independence, offsets held, bounds.

Time is injected: every `now` below is an explicit value, nothing waits.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from driftloop_collector.assembler import (
    AssemblerConfig,
    Completion,
    ConversationAssembler,
    Dropped,
    DropReason,
)
from driftloop_collector.genesys import (
    EndPiece,
    NormalizedPiece,
    Piece,
    StartPiece,
    TranscriptPiece,
    Utterance,
    WrapupPiece,
    parse_raw,
)
from driftloop_common.contracts.errors import ConfigError
from driftloop_common.contracts.events import InteractionRaw

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
CID = "conv-1"


def said(
    offset: int,
    *utterances: tuple[str, str],
    at: int = 0,
    cid: str = CID,
    part: int = 0,
    lang: str = "en-us",
) -> TranscriptPiece:
    """A transcription piece with (utterance id, text) pairs, `at` seconds after T0."""
    return TranscriptPiece(
        conversation_id=cid,
        partition=part,
        offset=offset,
        event_time=T0 + at * S,
        utterances=tuple(
            Utterance(utterance_id=uid, text=text, language=lang, offset_ms=i * 100)
            for i, (uid, text) in enumerate(utterances)
        ),
    )


def start(offset: int, *, cid: str = CID, part: int = 0) -> StartPiece:
    return StartPiece(
        conversation_id=cid, partition=part, offset=offset, event_time=T0, media_type="VOICE"
    )


def end(offset: int, *, at: int = 60, cid: str = CID, part: int = 0) -> EndPiece:
    return EndPiece(
        conversation_id=cid,
        partition=part,
        offset=offset,
        event_time=T0 + at * S,
        media_type=None,
        queue="q-1",
    )


def wrapup(offset: int, code: str = "w-7", *, at: int = 90, cid: str = CID) -> WrapupPiece:
    return WrapupPiece(
        conversation_id=cid,
        partition=0,
        offset=offset,
        event_time=T0 + at * S,
        code=code,
        queue=None,
    )


def feed(assembler: ConversationAssembler, pieces: list[Piece], now: datetime = T0) -> list:
    return [done for piece in pieces for done in assembler.add(piece, now)]


# ---------------------------------------------------------------- completion


def test_end_and_wrapup_complete_after_the_settle_grace() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=5 * S))
    pieces = [
        start(1),
        said(2, ("u1", "I want to"), at=10),
        said(3, ("u2", "cancel my order"), at=20),
        end(4),
        wrapup(5),
    ]
    assert feed(assembler, pieces) == []
    assert assembler.expire(T0 + 4 * S) == []
    [done] = assembler.expire(T0 + 5 * S)
    assert done.conversation_id == CID
    assert done.text == "I want to cancel my order"
    assert done.language == "en-us"
    assert done.completed_at == T0 + 60 * S  # the end event's time, not `now`
    assert (done.label, done.wrapup_code, done.queue) == ("w-7", "w-7", "q-1")
    assert done.media_type == "VOICE"  # from customer.start, since customer.end had none
    assert done.source_offsets == {0: [1, 2, 3, 4, 5]}
    assert done.completion is Completion.WRAPUP
    assert assembler.open_conversations == 0
    assert assembler.drain_dropped() == []


def test_without_wrapup_it_is_emitted_unlabelled_after_wrapup_wait_since_the_end_arrived() -> None:
    assembler = ConversationAssembler(AssemblerConfig(wrapup_wait=60 * S))
    assembler.add(said(1, ("u1", "hello")), T0)
    assembler.add(end(2, at=-3600), T0 + 10 * S)  # event time is irrelevant; arrival counts
    assembler.add(end(3, at=-3600), T0 + 40 * S)  # a duplicate does not restart the wait
    assert assembler.expire(T0 + 69 * S) == []
    [done] = assembler.expire(T0 + 70 * S)
    assert (done.label, done.wrapup_code, done.completion) == (
        None,
        None,
        Completion.WRAPUP_TIMEOUT,
    )


def test_next_due_is_the_earliest_timeout_of_the_open_conversations() -> None:
    assembler = ConversationAssembler(
        AssemblerConfig(wrapup_wait=60 * S, settle=5 * S, max_wait=600 * S)
    )
    assert assembler.next_due is None
    assembler.add(said(1, ("u1", "hello"), cid="a"), T0)  # no end: max_wait
    assert assembler.next_due == T0 + 600 * S
    assembler.add(end(2, cid="b"), T0 + 10 * S)  # end, no wrapup: wrapup_wait
    assert assembler.next_due == T0 + 70 * S
    assembler.add(wrapup(3, cid="b"), T0 + 20 * S)  # end + wrapup: settle
    assert assembler.next_due == T0 + 25 * S
    assert assembler.expire(T0 + 25 * S) == []  # "b" has no text: dropped, not emitted
    assert assembler.next_due == T0 + 600 * S  # what is left: "a"
    assert [d.conversation_id for d in assembler.expire(T0 + 600 * S)] == ["a"]
    assert assembler.next_due is None


def appended(piece: Piece, seconds: float) -> Piece:
    """The piece as read from a topic whose records carry the broker's append time."""
    return dataclasses.replace(piece, appended_at=T0 + seconds * S)


def test_a_backlog_is_due_once_the_log_has_moved_past_its_settle_time() -> None:
    # Read 10 minutes after Kafka took them (a restart, a backlog): nothing to wait for
    # once this partition has been read past the end + wrap-up + settle.
    assembler = ConversationAssembler(AssemblerConfig(settle=5 * S))
    now = T0 + 600 * S
    pieces = [
        appended(said(1, ("u1", "cancel my order")), 0),
        appended(end(2), 1),
        appended(wrapup(3), 2),
    ]
    assert feed(assembler, pieces, now) == []  # the log has not moved past 2 + 5 s yet
    assert assembler.expire(now) == []
    later = appended(said(4, ("u9", "hi"), cid="other"), 7.5)  # same partition, 7.5 s
    assert assembler.add(later, now) == []  # `add` settles its own conversation only
    [done] = assembler.expire(now)
    assert done.conversation_id == CID and done.label == "w-7"


def test_the_log_of_another_partition_does_not_make_it_due() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=5 * S))
    now = T0 + 600 * S
    feed(assembler, [appended(end(1), 1), appended(wrapup(2), 2)], now)
    assert assembler.add(appended(said(3, ("u", "x"), cid="b", part=1), 60), now) == []
    assert assembler.expire(now + 4 * S) == []
    # on the service's clock it still comes due: settle after the pieces were read
    assert [d.reason for d in (assembler.expire(now + 5 * S), assembler.drain_dropped())[1]] == [
        DropReason.NO_TEXT
    ]


def test_a_piece_read_before_it_could_settle_is_never_declared_late() -> None:
    # A transcript Kafka took after the wrap-up, within the settle time, arrives before a
    # record that moves the log past it: the conversation waits for it.
    assembler = ConversationAssembler(AssemblerConfig(settle=5 * S))
    now = T0 + 600 * S
    feed(assembler, [appended(end(1), 0), appended(wrapup(2), 1)], now)
    assert assembler.add(appended(said(3, ("u1", "trailing words")), 4), now) == []
    assert assembler.expire(now) == []  # the log is at 4 s: 1 + 5 s not passed yet
    assembler.add(appended(said(4, ("u", "x"), cid="other"), 6.5), now)
    [done] = assembler.expire(now)
    assert done.text == "trailing words"
    assert assembler.drain_dropped() == []


def test_a_broker_clock_ahead_of_the_services_changes_nothing() -> None:
    # Broker times are compared with broker times only: 1,000 s ahead of `now` here.
    assembler = ConversationAssembler(AssemblerConfig(settle=5 * S))
    feed(assembler, [appended(end(1), 1000), appended(wrapup(2), 1001)], T0)
    assembler.add(appended(said(3, ("u1", "trailing words")), 1004), T0)
    assert assembler.expire(T0) == []
    assembler.add(appended(said(4, ("u", "x"), cid="other"), 1006.5), T0)
    [done] = assembler.expire(T0)
    assert done.text == "trailing words"


def test_without_the_brokers_time_only_the_service_clock_counts() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=5 * S))
    now = T0 + 600 * S
    feed(assembler, [said(1, ("u1", "hello")), end(2), appended(wrapup(3), 2)], now)
    assert assembler.add(appended(said(4, ("u", "x"), cid="other"), 60), now) == []
    [done] = assembler.expire(now + 5 * S)
    assert done.conversation_id == CID


def test_a_wrapup_within_the_wait_completes_it_with_a_label() -> None:
    assembler = ConversationAssembler(AssemblerConfig(wrapup_wait=60 * S, settle=0 * S))
    feed(assembler, [said(1, ("u1", "hello")), end(2)])
    assert assembler.add(wrapup(3), T0 + 30 * S)[0].label == "w-7"


def test_without_end_it_is_emitted_after_max_wait_since_its_last_piece() -> None:
    assembler = ConversationAssembler(AssemblerConfig(max_wait=30 * 60 * S))
    assembler.add(said(1, ("u1", "one"), at=5), T0)
    assembler.add(said(2, ("u2", "two"), at=300), T0 + 300 * S)  # restarts the wait
    assert assembler.expire(T0 + (300 + 1800 - 1) * S) == []
    [done] = assembler.expire(T0 + (300 + 1800) * S)
    assert done.text == "one two"
    assert done.completion is Completion.MAX_WAIT
    assert done.completed_at == T0 + 300 * S  # the last piece's event time


def test_without_end_and_without_text_it_is_dropped_with_a_reason() -> None:
    assembler = ConversationAssembler(AssemblerConfig(max_wait=60 * S))
    feed(assembler, [start(1), said(2)])
    assert assembler.expire(T0 + 60 * S) == []
    assert assembler.drain_dropped() == [Dropped(CID, DropReason.NO_TEXT, {0: [1, 2]})]
    assert assembler.drain_dropped() == []  # reported once


def test_a_finished_conversation_without_customer_text_is_reported_not_emitted() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S))
    assert feed(assembler, [said(1), end(2), wrapup(3)]) == []
    assert assembler.drain_dropped() == [Dropped(CID, DropReason.NO_TEXT, {0: [1, 2, 3]})]


def test_normalized_piece_is_emitted_at_once() -> None:
    interaction = InteractionRaw(
        conversation_id="n-1",
        text="where is my card",
        language="en-us",
        completed_at=T0,
        label="card_arrival",
        queue="cards",
    )
    piece = NormalizedPiece(
        conversation_id="n-1", partition=2, offset=9, event_time=T0, interaction=interaction
    )
    assembler = ConversationAssembler()
    [done] = assembler.add(piece, T0)
    assert (done.text, done.label, done.queue, done.completion) == (
        "where is my card",
        "card_arrival",
        "cards",
        Completion.NORMALIZED,
    )
    assert done.source_offsets == {2: [9]}
    assert assembler.add(piece, T0 + S) == []  # redelivered: not twice
    assert assembler.drain_dropped() == [Dropped("n-1", DropReason.LATE, {2: [9]})]


# ---------------------------------------------------------------- text, language, labels


def test_text_follows_event_time_then_offset_and_duplicates_count_once() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S))
    pieces = [
        said(3, ("a", "order"), at=20),
        said(1, ("z", "cancel"), ("m", "my"), at=10),  # same time: offsetMs orders them
        said(7, ("m", "my"), at=10),  # the same utterance again, from a redelivery
        end(8),
        wrapup(9),
    ]
    [done] = feed(assembler, pieces)
    assert done.text == "cancel my order"
    assert done.source_offsets == {0: [1, 3, 7, 8, 9]}


def test_language_is_that_of_most_customer_utterances() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S))
    pieces = [
        said(1, ("u1", "hola"), at=1, lang="es-es"),
        said(2, ("u2", "sorry"), at=2),
        said(3, ("u3", "quiero cancelar"), at=3, lang="es-es"),
        end(4),
        wrapup(5),
    ]
    assert feed(assembler, pieces)[0].language == "es-es"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(None, "7c1b-id"), ({"7c1b-id": "cancel_order"}, "cancel_order"), ({"other": "x"}, None)],
)
def test_wrapup_codes_map_to_labels(labels: dict | None, expected: str | None) -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S, wrapup_labels=labels))
    [done] = feed(assembler, [said(1, ("u1", "hi")), end(2), wrapup(3, "7c1b-id")])
    assert (done.label, done.wrapup_code) == (expected, "7c1b-id")


def test_the_last_wrapup_gives_the_label() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S))
    pieces = [said(1, ("u1", "hi")), wrapup(3, "late", at=200), wrapup(2, "early", at=100)]
    assert feed(assembler, pieces) == []
    assert assembler.add(end(4), T0)[0].label == "late"


# ---------------------------------------------------------------- order independence


def test_output_does_not_depend_on_arrival_order_or_duplicates() -> None:
    pieces: list[Piece] = [
        start(1),
        said(2, ("u1", "hi there"), at=5),
        said(3, ("u2", "I lost"), ("u3", "my card"), at=15),
        said(4, ("u2", "I LOST"), at=15),  # the same utterance, differently: one copy wins
        said(5, ("u4", "please block it"), at=25),
        said(6, at=26),  # a message with no final customer utterance
        end(7),
        wrapup(8),
        wrapup(8),  # the same record handled twice
    ]
    outputs = []
    orders = [*itertools.islice(itertools.permutations(pieces), 0, None, 5000)]
    orders += [random.Random(seed).sample(pieces, len(pieces)) for seed in range(50)]
    for order in orders:
        assembler = ConversationAssembler(AssemblerConfig(settle=5 * S))
        assert feed(assembler, list(order)) == []
        outputs.append(assembler.expire(T0 + 10 * S))
        assert assembler.drain_dropped() == []
    assert len(orders) > 60
    assert all(output == outputs[0] for output in outputs)
    [done] = outputs[0]
    assert done.text == "hi there I lost my card please block it"
    assert done.source_offsets == {0: [1, 2, 3, 4, 5, 6, 7, 8]}


# ---------------------------------------------------------------- late pieces, memory


def test_a_late_piece_does_not_re_emit_the_conversation() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S))
    assert len(feed(assembler, [said(1, ("u1", "hi")), end(2), wrapup(3)])) == 1
    assert assembler.add(said(4, ("u2", "one more thing")), T0 + 60 * S) == []
    assert assembler.add(end(5), T0 + 61 * S) == []
    assert assembler.expire(T0 + 3600 * S) == []
    assert assembler.open_conversations == 0
    assert [d.reason for d in assembler.drain_dropped()] == [DropReason.LATE] * 2
    assert assembler.min_pending_offset(0) is None  # late pieces are not held


def test_closed_ids_are_remembered_for_a_bounded_time() -> None:
    config = AssemblerConfig(settle=0 * S, remember_closed=3600 * S, max_wait=60 * S)
    assembler = ConversationAssembler(config)
    feed(assembler, [said(1, ("u1", "hi")), end(2), wrapup(3)])
    assembler.add(said(4, ("u2", "late")), T0 + 3599 * S)
    assert assembler.open_conversations == 0
    assembler.add(said(5, ("u3", "much later")), T0 + 3600 * S)  # forgotten: a new conversation
    assert assembler.open_conversations == 1


def test_closed_ids_are_remembered_up_to_a_bounded_number() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S, max_remembered=1))
    for i, cid in enumerate(["a", "b"]):
        feed(assembler, [said(3 * i, ("u", "hi"), cid=cid), end(3 * i + 1, cid=cid)])
        feed(assembler, [wrapup(3 * i + 2, cid=cid)])
    assembler.add(said(10, ("u", "late"), cid="b"), T0)
    assert assembler.open_conversations == 0
    assembler.add(said(11, ("u", "late"), cid="a"), T0)  # "a" was pushed out of memory
    assert assembler.open_conversations == 1


def test_open_conversations_are_bounded_least_recently_updated_goes_first() -> None:
    assembler = ConversationAssembler(AssemblerConfig(max_open=2))
    assert assembler.add(said(1, ("u1", "first"), cid="a"), T0) == []
    assert assembler.add(said(2, cid="b"), T0 + S) == []
    assert assembler.add(said(3, ("u3", "more"), cid="a"), T0 + 2 * S) == []
    assert assembler.add(said(4, ("u4", "c"), cid="c"), T0 + 3 * S) == []  # evicts "b": no text
    assert assembler.drain_dropped() == [Dropped("b", DropReason.EVICTED, {0: [2]})]
    [done] = assembler.add(said(5, ("u5", "d"), cid="d"), T0 + 4 * S)  # evicts "a"
    assert (done.conversation_id, done.text, done.completion) == (
        "a",
        "first more",
        Completion.EVICTED,
    )
    assert assembler.open_conversations == 2


# ---------------------------------------------------------------- offsets held


def test_min_pending_offset_tracks_the_pieces_held_per_partition() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S))
    assert assembler.min_pending_offset(0) is None
    feed(
        assembler,
        [
            said(10, ("u1", "a"), cid="a"),
            said(11, ("u1", "b"), cid="b"),
            said(12, ("u2", "a"), cid="a", part=1),
            said(5, ("u2", "b"), cid="b", part=1),
            end(13, cid="b"),
            said(17, ("u3", "a"), cid="a"),
        ],
    )
    assert (assembler.min_pending_offset(0), assembler.min_pending_offset(1)) == (10, 5)
    assert assembler.min_pending_offset(2) is None
    [done] = assembler.add(wrapup(14, cid="b"), T0)
    assert done.conversation_id == "b"
    assert done.source_offsets == {0: [11, 13, 14], 1: [5]}
    assert (assembler.min_pending_offset(0), assembler.min_pending_offset(1)) == (10, 12)
    feed(assembler, [end(15, cid="a"), wrapup(16, cid="a")])
    assert (assembler.min_pending_offset(0), assembler.min_pending_offset(1)) == (None, None)


def test_revoke_forgets_conversations_of_lost_partitions() -> None:
    assembler = ConversationAssembler()
    feed(assembler, [said(1, ("u", "x"), cid="a"), said(2, ("u", "y"), cid="b", part=1)])
    assert assembler.revoke({1}) == 1
    assert assembler.min_pending_offset(1) is None
    assert assembler.min_pending_offset(0) == 1
    assert assembler.drain_dropped() == []  # not dropped: the new owner assembles it


# ---------------------------------------------------------------- from bytes


def test_from_genesys_bytes_to_a_conversation() -> None:
    def message(topic: str, body: dict) -> bytes:
        body = {"eventTime": 1_764_000_000_000, "conversationId": "c-9", **body}
        return json.dumps({"topicName": topic.format(id="c-9"), "eventBody": body}).encode()

    words = {"confidence": 0.9, "offsetMs": 0, "durationMs": 1, "words": []}
    final = {"isFinal": True, "channel": "EXTERNAL", "dialect": "es-ES", "engineProvider": "G"}
    records = [
        message(
            "v2.conversations.{id}.transcription",
            {
                "communicationId": "m",
                "transcripts": [
                    {**final, "utteranceId": "1", "alternatives": [{**words, "transcript": "hola"}]}
                ],
            },
        ),
        message("v2.detail.events.conversation.{id}.customer.end", {"mediaType": "VOICE"}),
        message("v2.detail.events.conversation.{id}.wrapup", {"wrapupCode": "w", "queueId": "q"}),
    ]
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S))
    pieces = [parse_raw(raw, partition=0, offset=i) for i, raw in enumerate(records)]
    [done] = feed(assembler, pieces)
    assert (done.text, done.language, done.label, done.queue, done.media_type) == (
        "hola",
        "es-es",
        "w",
        "q",
        "VOICE",
    )
    assert done.completed_at == datetime.fromtimestamp(1_764_000_000, UTC)


# ---------------------------------------------------------------- the text cap


def test_pieces_together_over_the_text_cap_are_cut_to_it_keeping_the_beginning() -> None:
    # Each piece is under the cap (parsing rejects one that is not); together they are not.
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S, max_text_bytes=25))
    pieces = [
        said(1, ("u1", "my card was stolen"), at=1),
        said(2, ("u2", "please block it"), at=2),
        end(3),
        wrapup(4),
    ]
    [done] = feed(assembler, pieces)
    assert done.text == "my card was stolen please"  # 25 bytes
    assert done.truncated
    assert done.label == "w-7" and done.pieces == 4  # still a whole, labelled conversation


def test_the_cut_falls_on_a_character_boundary() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S, max_text_bytes=24))
    pieces = [said(1, ("u1", "é" * 10), at=1), said(2, ("u2", "ü" * 10), at=2), end(3), wrapup(4)]
    [done] = feed(assembler, pieces)
    assert done.text == "é" * 10 + " ü"  # 23 bytes: a second "ü" would make 25
    assert done.truncated


def test_text_under_the_cap_is_left_alone() -> None:
    assembler = ConversationAssembler(AssemblerConfig(settle=0 * S, max_text_bytes=25))
    pieces = [said(1, ("u1", "my card was stolen"), at=1), end(3), wrapup(4)]
    [done] = feed(assembler, pieces)
    assert (done.text, done.truncated) == ("my card was stolen", False)


# ---------------------------------------------------------------- guards


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ConversationAssembler().expire(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "bad",
    [
        {"wrapup_wait": 0 * S},
        {"max_wait": -S},
        {"settle": -S},
        {"max_open": 0},
        {"max_text_bytes": 0},
    ],
)
def test_config_is_checked(bad: dict) -> None:
    with pytest.raises(ConfigError):
        AssemblerConfig(**bad)
