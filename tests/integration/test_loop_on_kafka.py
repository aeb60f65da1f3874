"""The service loop against a real Kafka broker: DLQ, rebalance, broker restart."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import Event, decode_event
from driftloop_common.runtime.kafka import make_consumer
from driftloop_common.runtime.loop import LOG_APPEND_TIME, RetryPolicy
from driftloop_common.runtime.settings import KafkaSettings
from driftloop_local.kafka import LocalKafka
from tests.integration.helpers import (
    audit_of,
    make_topics,
    produce,
    read_all,
    real_loop,
    request,
    running,
    wait_for,
)

pytestmark = pytest.mark.integration


async def test_malformed_message_lands_in_dlq_with_reason_and_next_good_one_is_handled(
    kafka_bootstrap: str, fresh_name
) -> None:
    source, out = fresh_name("in"), fresh_name("out")
    await make_topics(kafka_bootstrap, source, out, f"{source}.dlq", partitions=1)
    good = request(1, "en-us")
    malformed = b'{"event_type": "training.requested", "model_key": "intent/en-us", "payload": 7}'
    await produce(kafka_bootstrap, source, [malformed, good])

    handled: list[Event] = []

    async def handle(event: Event) -> list[Event]:
        handled.append(event)
        return audit_of(event)

    loop = real_loop(
        kafka_bootstrap, topics=[source], group=fresh_name("g"), handle=handle, out_topic=out
    )
    async with running(loop):
        outputs = await read_all(kafka_bootstrap, out, expect=1)
        dead = await read_all(kafka_bootstrap, f"{source}.dlq", expect=1)

    assert [e.event_id for e in handled] == [good.event_id]
    assert len(outputs) == 1
    assert decode_event(outputs[0].value).correlation_id == good.correlation_id
    assert len(dead) == 1
    assert dead[0].value == malformed
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert "payload: Input should be an object" in headers["dlq.reason"]
    assert "producer: Field required" in headers["dlq.reason"]
    assert headers["dlq.source_topic"] == source and headers["dlq.source_offset"] == "0"


async def test_a_handler_bug_on_one_input_dead_letters_it_and_the_next_is_handled(
    kafka_bootstrap: str, fresh_name
) -> None:
    source, out, group = fresh_name("in"), fresh_name("out"), fresh_name("g")
    await make_topics(kafka_bootstrap, source, out, f"{source}.dlq", partitions=1)
    poison, good = request(1, "en-us"), request(2, "en-us")
    await produce(kafka_bootstrap, source, [poison, good])

    async def handle(event: Event) -> list[Event]:
        if event.event_id == poison.event_id:
            raise OverflowError("date value out of range")
        return audit_of(event)

    loop = real_loop(
        kafka_bootstrap,
        topics=[source],
        group=group,
        handle=handle,
        out_topic=out,
        retry=RetryPolicy(attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1, max_failures=3),
    )
    async with running(loop):
        (dead,) = await read_all(kafka_bootstrap, f"{source}.dlq", expect=1)
        (output,) = await read_all(kafka_bootstrap, out, expect=1)
        await wait_for(lambda: loop._committed.get(TopicPartition(source, 0)) == 2, what="commit")
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dlq.reason_code"] == "handler_failed"
    assert headers["dlq.exception_type"] == "OverflowError"
    assert "date value out of range" in headers["dlq.reason"]
    assert decode_event(output.value).correlation_id == good.correlation_id
    # The failure count lived in the committed offset's metadata; the final commit cleared it.
    consumer = make_consumer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), group_id=group, client_id="check"
    )
    await consumer.start()
    try:
        assert await consumer.committed_metadata([TopicPartition(source, 0)]) == {
            TopicPartition(source, 0): (2, "")
        }
    finally:
        await consumer.stop()


async def test_two_consumers_share_partitions_and_a_rebalance_loses_nothing(
    kafka_bootstrap: str, fresh_name
) -> None:
    source, out, group = fresh_name("in"), fresh_name("out"), fresh_name("g")
    await make_topics(kafka_bootstrap, source, out, partitions=4)
    handled_by: dict[str, set[str]] = {"a": set(), "b": set()}

    def handler(name: str):
        async def handle(event: Event) -> list[Event]:
            handled_by[name].add(str(event.event_id))
            return audit_of(event)

        return handle

    def all_handled() -> set[str]:
        return handled_by["a"] | handled_by["b"]

    events = [request(i) for i in range(240)]
    wanted = {str(e.event_id) for e in events}
    a = real_loop(
        kafka_bootstrap, topics=[source], group=group, handle=handler("a"), out_topic=out, name="a"
    )
    b = real_loop(
        kafka_bootstrap, topics=[source], group=group, handle=handler("b"), out_topic=out, name="b"
    )
    async with running(a):
        await produce(kafka_bootstrap, source, events[:80])
        await wait_for(lambda: len(all_handled()) >= 80, what="a to handle the first 80")
        async with running(b):
            await wait_for(
                lambda: b.state.joined_group and bool(b.state.assignment),
                what="b to get partitions",
            )
            await wait_for(lambda: bool(a.state.assignment), what="a to get partitions back")
            assert a.state.assignment.isdisjoint(b.state.assignment)
            assert len(a.state.assignment | b.state.assignment) == 4
            await produce(kafka_bootstrap, source, events[80:160])
            await wait_for(lambda: len(all_handled()) >= 160, what="both to handle 160")
        # b left: its partitions move back to a, which must pick up where b committed.
        await produce(kafka_bootstrap, source, events[160:])
        await wait_for(lambda: all_handled() >= wanted, what="a to handle the rest")

    assert all_handled() == wanted
    assert handled_by["a"] and handled_by["b"], "both consumers should have had partitions"
    outputs = await read_all(kafka_bootstrap, out, expect=len(events))
    distinct = {json.loads(r.value)["event_id"] for r in outputs}
    assert len(distinct) == len(events)  # duplicates are possible, losses are not


async def test_broker_restart_during_consumption_loses_nothing(tmp_path, fresh_name) -> None:
    broker = LocalKafka(tmp_path / "kafka")
    bootstrap = await asyncio.to_thread(broker.start, timeout_s=180)
    try:
        source, out = fresh_name("in"), fresh_name("out")
        await make_topics(bootstrap, source, out, partitions=2)
        seen: Counter[str] = Counter()

        async def handle(event: Event) -> list[Event]:
            seen[str(event.event_id)] += 1
            return audit_of(event)

        events = [request(i) for i in range(120)]
        loop = real_loop(
            bootstrap,
            topics=[source],
            group=fresh_name("g"),
            handle=handle,
            out_topic=out,
            retry=RetryPolicy(attempts=30, initial_backoff_s=0.5, max_backoff_s=2),
        )
        async with running(loop) as task:
            await produce(bootstrap, source, events[:60])
            await wait_for(lambda: len(seen) >= 20, what="consumption to start")
            await asyncio.to_thread(broker.stop)
            assert broker.status().running is False
            restarted = await asyncio.to_thread(broker.start, timeout_s=180)
            assert restarted == bootstrap  # same address: clients reconnect by themselves
            await produce(bootstrap, source, events[60:])
            await wait_for(
                lambda: len(seen) >= len(events),
                timeout_s=120,
                what="every event after the restart",
            )
            assert not task.done(), "the loop must survive a broker restart"
        assert set(seen) == {str(e.event_id) for e in events}
    finally:
        await asyncio.to_thread(broker.stop)


async def test_the_broker_stamps_interactions_raw_with_its_own_append_time(
    kafka_bootstrap: str,
) -> None:
    # The collector's waits follow the log only on broker-stamped records (see topics.py).
    await make_topics(kafka_bootstrap, topics.INTERACTIONS_RAW)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    an_hour_ago_ms = int((time.time() - 3600) * 1000)
    try:
        sent = await producer.send_and_wait(
            topics.INTERACTIONS_RAW, b"{}", key=b"stamp-test", timestamp_ms=an_hour_ago_ms
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.INTERACTIONS_RAW, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        [record] = (await consumer.getmany(tp, timeout_ms=10_000, max_records=1))[tp]
    finally:
        await consumer.stop()
    assert record.timestamp_type == LOG_APPEND_TIME
    assert record.timestamp > an_hour_ago_ms + 3_000_000  # the broker's clock, not ours


async def test_dead_letter_topics_are_created_with_their_retention(
    kafka_bootstrap: str, fresh_name
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from driftloop_common.runtime.kafka import create_topics

    name = fresh_name("in")
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await create_topics(settings, [name], dlq_retention_ms=2 * 3600 * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{name}.dlq", {"retention.ms": None})]
        )
    finally:
        await admin.close()
    ((_, _, _, _, entries),) = response.resources
    assert {entry[0]: entry[1] for entry in entries}["retention.ms"] == str(2 * 3600 * 1000)
