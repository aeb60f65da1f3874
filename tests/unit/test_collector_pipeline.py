"""The collector between loop and encoder: batching, commit floor, idempotent outputs."""

from __future__ import annotations

import dataclasses
import json
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
from aiokafka import TopicPartition

from driftloop_collector.pipeline import Collector
from driftloop_collector.settings import CollectorSettings
from driftloop_common.events import EncoderInfo
from driftloop_common.metrics import LoopMetrics
from driftloop_common.service import LOG_APPEND_TIME
from driftloop_common.store import InteractionStore
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
        generate(GeneratorConfig(seed=seed, count=n, start=T0, end=T0 + timedelta(days=1)))
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
