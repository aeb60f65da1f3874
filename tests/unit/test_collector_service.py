"""The collector between loop and encoder: batching, commit floor, idempotent outputs."""

from __future__ import annotations

import dataclasses
import json
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from aiokafka import TopicPartition

from driftloop_collector.genesys import NormalizedPiece
from driftloop_collector.service import Collector
from driftloop_collector.settings import CollectorSettings
from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import EncoderInfo, InteractionRaw
from driftloop_common.runtime.loop import LOG_APPEND_TIME, DeadLetter
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.storage.interactions import InteractionStore
from driftloop_synthetic import GeneratorConfig, generate, kafka_records
from tests.unit.fakes import FakeRecord

TP = TopicPartition("interactions.raw", 0)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class FakeEncoder:
    """Deterministic vectors from the text, and a record of every batch it was given."""

    info = EncoderInfo(id="fake", precision="fp32")
    loaded = True

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts, batch_size=64):
        self.batches.append(list(texts))
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=384) for t in texts]
        return np.array(rows, dtype=np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def collector(tmp_path, **settings):
    clock = Clock()
    c = Collector(
        CollectorSettings(
            store_url=str(tmp_path / "store"), wrapup_wait_s=60, settle_s=1, **settings
        ),
        encoder=FakeEncoder(),
        store=InteractionStore(str(tmp_path / "store")),
        metrics=LoopMetrics("collector"),
        clock=clock,
    )
    return c, clock


def conversation_records(n: int, seed: int = 1) -> list[FakeRecord]:
    interactions = list(
        generate(GeneratorConfig(seed=seed, count=n, start=T0 - timedelta(days=1), end=T0))
    )
    return [
        FakeRecord("interactions.raw", 0, offset, value, key)
        for offset, (key, value) in enumerate(kafka_records(interactions))
    ]


async def test_complete_conversations_are_embedded_in_one_batch_per_flush(tmp_path) -> None:
    c, clock = collector(tmp_path)
    records = conversation_records(12)
    for record in records:
        await c.handle(c.decode(record))
    assert c.commit_floor(TP) == 0  # everything is still held
    assert c.flush_due_in() == 1.0  # the settle time
    clock.now += timedelta(seconds=2)  # past the settle time
    events = await c.flush()
    assert len(c.encoder.batches) == 1 and len(c.encoder.batches[0]) == 12
    assert len({e.event_id for e in events}) == 12
    assert c.commit_floor(TP) is None  # nothing held any more
    assert await c.flush() == []


async def test_a_backlog_is_embedded_in_flushes_of_bounded_size(tmp_path) -> None:
    c, clock = collector(tmp_path, max_flush_conversations=5)
    records = conversation_records(12)
    for record in records:
        await c.handle(c.decode(record))
    clock.now += timedelta(seconds=2)  # all 12 are due at once
    sizes, floors = [], []
    while events := await c.flush():
        sizes.append(len(events))
        floors.append(c.commit_floor(TP))
        assert c.flush_due_in() == (0.0 if floors[-1] is not None else None)
    assert sizes == [5, 5, 2]
    assert [len(batch) for batch in c.encoder.batches] == [5, 5, 2]
    # the unflushed rest holds the commit floor until it is out
    assert floors[0] is not None and floors[0] <= floors[1] and floors[2] is None


async def test_a_backlog_stamped_by_the_broker_does_not_wait_for_the_settle_time(
    tmp_path,
) -> None:
    # Records Kafka appended an hour ago, one a second (LogAppendTime): each conversation
    # is due as soon as the partition has been read past its wrap-up + settle (1 s).
    c, clock = collector(tmp_path)
    hour_ago_ms = int((T0 - timedelta(hours=1)).timestamp() * 1000)
    records = [
        dataclasses.replace(r, timestamp=hour_ago_ms + 1000 * i, timestamp_type=LOG_APPEND_TIME)
        for i, r in enumerate(conversation_records(12))
    ]
    for record in records:
        await c.handle(c.decode(record))
    first = await c.flush()  # the clock has not moved
    assert len(first) == 11  # the last one: nothing read after it yet
    clock.now += timedelta(seconds=2)  # … so it waits out the settle time on the clock
    assert len(await c.flush()) == 1


async def test_a_revoked_partition_leaves_nothing_to_flush(tmp_path) -> None:
    c, clock = collector(tmp_path, max_flush_conversations=5)
    kept = conversation_records(4, seed=1)
    lost = [
        FakeRecord(r.topic, 1, r.offset, r.value, r.key) for r in conversation_records(4, seed=2)
    ]
    for record in kept + lost:
        await c.handle(c.decode(record))
    clock.now += timedelta(seconds=2)
    await c.flush()  # 5 of the 8 due conversations are out; 3 wait for the next flush
    waiting = {cv.conversation_id for cv in c._ready}
    await c.on_revoked({TopicPartition("interactions.raw", 1)})
    rest = await c.flush()
    lost_ids = {json.loads(r.value)["detail"]["eventBody"]["conversationId"] for r in lost}
    assert waiting & lost_ids and waiting - lost_ids  # both kinds were waiting
    assert {e.payload.conversation_id for e in rest} == waiting - lost_ids
    assert c.commit_floor(TopicPartition("interactions.raw", 1)) is None


async def test_a_conversation_waiting_for_its_wrapup_holds_the_commit_floor(tmp_path) -> None:
    c, clock = collector(tmp_path)
    records = conversation_records(3)
    wrapups = [r for r in records if b".wrapup" in r.value]
    held_back = wrapups[0]
    for record in records:
        if record is not held_back:
            await c.handle(c.decode(record))
    clock.now += timedelta(seconds=2)
    events = await c.flush()
    assert len(events) == 2
    held_conversation = json.loads(held_back.value)["detail"]["eventBody"]["conversationId"]
    first_piece = min(
        r.offset for r in records if held_conversation.encode() in r.value and r is not held_back
    )
    assert c.commit_floor(TP) == first_piece
    assert c.flush_due_in() == 58.0  # the loop's poll waits no longer than the wrap-up wait
    clock.now += timedelta(seconds=61)  # the wrap-up never came: emitted unlabelled
    (late,) = await c.flush()
    assert c.flush_due_in() is None
    assert late.payload.conversation_id == held_conversation and late.payload.label is None
    assert c.commit_floor(TP) is None


async def test_the_same_conversation_twice_gets_the_same_event_id(tmp_path) -> None:
    first, clock1 = collector(tmp_path / "a")
    again, clock2 = collector(tmp_path / "b")
    records = conversation_records(4, seed=5)
    for c, clock in ((first, clock1), (again, clock2)):
        for record in records:
            await c.handle(c.decode(record))
        clock.now += timedelta(seconds=2)
    ids_first = sorted(str(e.event_id) for e in await first.flush())
    ids_again = sorted(str(e.event_id) for e in await again.flush())
    assert ids_first == ids_again


async def test_one_event_per_configured_model_type(tmp_path) -> None:
    c, clock = collector(tmp_path, model_types=("intent", "sentiment"))
    for record in conversation_records(2):
        await c.handle(c.decode(record))
    clock.now += timedelta(seconds=2)
    events = await c.flush()
    assert sorted(str(e.model_key).split("/")[0] for e in events) == [
        "intent",
        "intent",
        "sentiment",
        "sentiment",
    ]
    assert len({e.event_id for e in events}) == 4


# ---------------------------------------------------------------- poison in a flush

MINUTE_AGO = T0 - timedelta(minutes=1)


def genesys(offset: int, topic: str, body: dict, partition: int = 0) -> FakeRecord:
    cid = body["conversationId"]
    value = {"topicName": topic.format(id=cid), "eventBody": body}
    return FakeRecord(
        "interactions.raw", partition, offset, json.dumps(value).encode(), cid.encode()
    )


def said(offset: int, cid: str, *texts: str, at: int = 0) -> FakeRecord:
    """A transcription message of final customer utterances, `at` seconds after MINUTE_AGO."""
    results = [
        {
            "utteranceId": f"{cid}-{offset}-{i}",
            "isFinal": True,
            "channel": "EXTERNAL",
            "dialect": "en-US",
            "alternatives": [{"confidence": 0.9, "offsetMs": i, "transcript": text}],
        }
        for i, text in enumerate(texts)
    ]
    return genesys(
        offset,
        "v2.conversations.{id}.transcription",
        {"eventTime": _ms(at), "conversationId": cid, "transcripts": results},
    )


def ended(offset: int, cid: str, at: int = 30) -> FakeRecord:
    return genesys(
        offset,
        "v2.detail.events.conversation.{id}.customer.end",
        {"eventTime": _ms(at), "conversationId": cid, "mediaType": "VOICE"},
    )


def wrapped(offset: int, cid: str, code: str = "lost_card", at: int = 40) -> FakeRecord:
    return genesys(
        offset,
        "v2.detail.events.conversation.{id}.wrapup",
        {"eventTime": _ms(at), "conversationId": cid, "wrapupCode": code},
    )


def _ms(at: int) -> int:
    return int((MINUTE_AGO + timedelta(seconds=at)).timestamp() * 1000)


def whole(offset: int, cid: str, text: str = "I want to cancel my order") -> list[FakeRecord]:
    """The four records of one finished, labelled conversation, from `offset` on."""
    return [
        said(offset, cid, text),
        said(offset + 1, cid, "today please"),
        ended(offset + 2, cid),
        wrapped(offset + 3, cid),
    ]


async def feed(c: Collector, records: list[FakeRecord]) -> None:
    for record in records:
        await c.handle(c.decode(record))


def split(outputs: list) -> tuple[list[DeadLetter], dict[str, object]]:
    letters = [o for o in outputs if isinstance(o, DeadLetter)]
    events = {o.payload.conversation_id: o for o in outputs if not isinstance(o, DeadLetter)}
    assert len(letters) + len(events) == len(outputs)
    return letters, events


def stored(tmp_path) -> dict[str, dict]:
    table = InteractionStore(str(tmp_path / "store")).read(
        "en-us", T0 - timedelta(days=2), T0 + timedelta(days=1)
    )
    return {r["conversation_id"]: r for r in table.to_pylist()}


async def test_an_event_over_the_producers_request_limit_is_dead_lettered_not_the_batch(
    tmp_path,
) -> None:
    # Two ~600 KB transcript pieces of one conversation (the text cap raised out of the way):
    # its interaction.embedded record would be over aiokafka's 1 MiB max_request_size.
    c, clock = collector(tmp_path, max_text_bytes=2_000_000)
    piece = "blah " * 120_000
    records = [
        said(0, "still-open", "hello?"),  # no end yet: holds the commit floor at 0
        *whole(1, "before"),
        said(5, "huge", piece),
        said(6, "huge", piece),
        ended(7, "huge"),
        wrapped(8, "huge"),
        *whole(9, "after"),
    ]
    await feed(c, records)
    clock.now += timedelta(seconds=2)

    letters, events = split(await c.flush())

    assert sorted(events) == ["after", "before"]
    assert all(len(e.to_bytes()) + len(e.key) <= 1_048_576 for e in events.values())
    [letter] = letters
    assert letter.topic == "interactions.raw"
    assert {p: list(o) for p, o in letter.offsets.items()} == {0: [5, 6, 7, 8]}
    assert letter.error.code == "event_too_large"
    assert letter.key == b"huge"
    summary = json.loads(letter.value)
    assert (summary["conversation_id"], summary["label"], summary["pieces"]) == (
        "huge",
        "lost_card",
        4,
    )
    assert len(letter.value) < 10_000  # small enough for any DLQ
    assert sorted(stored(tmp_path)) == ["after", "before"]
    # the dead-lettered conversation holds no offset back: only the open one does
    assert c.commit_floor(TP) == 0
    assert await c.flush() == []


async def test_pieces_over_the_text_cap_together_are_emitted_cut_to_it(tmp_path) -> None:
    c, clock = collector(tmp_path)  # the default cap: 64 KiB
    piece = "blah " * 8_000  # 40 KB each: under the cap alone, over it together
    await feed(
        c, [said(0, "long", piece), said(1, "long", piece), ended(2, "long"), wrapped(3, "long")]
    )
    clock.now += timedelta(seconds=2)

    letters, events = split(await c.flush())

    assert letters == []
    text = events["long"].payload.text
    assert len(text.encode()) <= 65_536 and text.startswith("blah blah")
    assert events["long"].payload.label == "lost_card"
    assert len(stored(tmp_path)["long"]["text"].encode()) <= 65_536


async def test_one_message_over_the_text_cap_never_reaches_a_flush(tmp_path) -> None:
    c, _ = collector(tmp_path)
    with pytest.raises(PermanentError) as err:  # the loop dead-letters the record itself
        c.decode(said(0, "c", "blah " * 14_000))
    assert err.value.code == "text_too_long"


async def test_text_that_is_not_unicode_past_parsing_is_dead_lettered_not_the_batch(
    tmp_path,
) -> None:
    # Parsing rejects lone surrogates; this one is put in behind its back, as a bug would.
    c, clock = collector(tmp_path)
    await feed(c, [*whole(0, "fine"), *whole(5, "also-fine")])
    raw = InteractionRaw.model_construct(
        conversation_id="poison",
        text="card \udfff stolen",
        language="en-us",
        completed_at=MINUTE_AGO,
        label="lost_card",
        queue=None,
        media_type=None,
    )
    await c.handle(
        NormalizedPiece(
            conversation_id="poison",
            partition=0,
            offset=4,
            event_time=MINUTE_AGO,
            interaction=raw,
        )
    )
    clock.now += timedelta(seconds=2)

    letters, events = split(await c.flush())

    assert sorted(events) == ["also-fine", "fine"]
    [letter] = letters
    assert (letter.error.code, dict(letter.offsets)) == ("unencodable_text", {0: [4]})
    assert json.loads(letter.value)["text"] == "card \udfff stolen"  # ASCII JSON keeps it
    assert sorted(stored(tmp_path)) == ["also-fine", "fine"]
    assert c.commit_floor(TP) is None


class OneBadVector(FakeEncoder):
    """An encoder that returns a vector of the wrong length for one text."""

    def encode(self, texts, batch_size=64):
        vectors = list(super().encode(texts, batch_size))
        return [v[:383] if "POISON" in t else v for t, v in zip(texts, vectors, strict=True)]


async def test_rows_the_store_refuses_are_dead_lettered_and_the_rest_stored(tmp_path) -> None:
    c, clock = collector(tmp_path)
    c.encoder = OneBadVector()
    await feed(c, [*whole(0, "fine"), *whole(4, "bad", "POISON"), *whole(8, "also-fine")])
    clock.now += timedelta(seconds=2)

    letters, events = split(await c.flush())

    assert sorted(events) == ["also-fine", "fine"]
    [letter] = letters
    assert letter.error.code == "embedding_dimension"
    assert dict(letter.offsets) == {0: [4, 5, 6, 7]}
    assert sorted(stored(tmp_path)) == ["also-fine", "fine"]
    assert c.commit_floor(TP) is None


# ---------------------------------------------------------------- restarts


class Ends:
    """The consumer as `on_assigned` sees it: only its end offsets."""

    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        self.ends = ends

    async def end_offsets(self, partitions):
        return {tp: self.ends[tp] for tp in partitions}


RESTARTS = {
    # A: pieces at 0, 2, 3, 4; B open at 1, so the commit floor is 1
    "first piece below the floor": [
        said(0, "A", "my card was stolen"),
        said(1, "B", "hello"),
        said(2, "A", "please block it", at=5),
        ended(3, "A"),
        wrapped(4, "A"),
    ],
    # the wrap-up came first (EventBridge does not keep order): a re-read has no label
    "wrap-up below the floor": [
        wrapped(0, "A"),
        said(1, "B", "hello"),
        said(2, "A", "my card was stolen please block it"),
        ended(3, "A"),
    ],
}


@pytest.mark.parametrize("assigned", [True, False], ids=["assigned", "no-assignment-info"])
@pytest.mark.parametrize("scenario", list(RESTARTS))
async def test_a_restart_inside_an_emitted_conversation_never_emits_a_poorer_copy(
    tmp_path, scenario: str, assigned: bool
) -> None:
    records = RESTARTS[scenario]
    first, clock = collector(tmp_path)
    await feed(first, records)
    clock.now += timedelta(seconds=2)
    [emitted] = await first.flush()
    assert emitted.payload.conversation_id == "A"
    assert emitted.payload.text == "my card was stolen please block it"
    assert emitted.payload.label == "lost_card"
    floor = first.commit_floor(TP)
    assert floor == 1  # B holds it: a restart reads A's later pieces again

    # A new process with the same store reads the partition from the committed offset.
    again, clock = collector(tmp_path)
    if assigned:
        await again.on_assigned(Ends({TP: len(records)}), {TP})
    await feed(again, [r for r in records if r.offset >= floor])
    outputs = []
    for _ in range(2):  # A's copy would be due after the wrap-up wait, B after max_wait
        clock.now += timedelta(seconds=1900)
        outputs += await again.flush()

    assert [e.payload.conversation_id for e in outputs] == ["B"]  # A was not emitted again
    row = stored(tmp_path)["A"]
    assert (row["text"], row["label"], row["pieces"]) == (
        "my card was stolen please block it",
        "lost_card",
        len(records) - 1,
    )
    assert again.commit_floor(TP) is None  # A's re-read pieces were released


async def test_a_conversation_read_again_whole_is_emitted_again(tmp_path) -> None:
    # A crash after the store write but before the events were acknowledged: the floor did
    # not move, the whole conversation is read again and must be published.
    records = whole(0, "A")
    first, clock = collector(tmp_path)
    await feed(first, records)
    clock.now += timedelta(seconds=2)
    [lost] = await first.flush()

    again, clock = collector(tmp_path)
    await again.on_assigned(Ends({TP: 4}), {TP})
    await feed(again, records)
    clock.now += timedelta(seconds=2)
    [republished] = await again.flush()
    assert republished.event_id == lost.event_id
    assert republished.payload == lost.payload


class CountingStore(InteractionStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.lookups: list[tuple[str, str]] = []

    def pieces_stored(self, language: str, day: str) -> dict[str, int]:
        self.lookups.append((language, day))
        return super().pieces_stored(language, day)


@pytest.mark.parametrize(("end", "looked_up"), [(0, False), (8, True)])
async def test_only_conversations_read_before_the_assignment_are_checked_in_the_store(
    tmp_path, end: int, looked_up: bool
) -> None:
    c, clock = collector(tmp_path)
    c.store = store = CountingStore(str(tmp_path / "store"))
    await c.on_assigned(Ends({TP: end}), {TP})
    await feed(c, [*whole(0, "A"), *whole(4, "B")])
    clock.now += timedelta(seconds=2)
    assert len(await c.flush()) == 2
    assert bool(store.lookups) is looked_up
    assert len(store.lookups) <= 3  # the day and either side, once for the assignment
    await feed(c, whole(8, "C"))
    clock.now += timedelta(seconds=2)
    assert len(await c.flush()) == 1
    assert len(store.lookups) <= 3
