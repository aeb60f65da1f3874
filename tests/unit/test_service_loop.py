"""The service loop with injected fake clients: commit after produce, DLQ, no commit on failure."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import TopicPartition

from driftloop_common.contracts.errors import PermanentError, RetryableError
from driftloop_common.contracts.events import (
    Audit,
    AuditEvent,
    Event,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.loop import RetryPolicy, ServiceLoop, _Rebalance
from tests.unit.fakes import FakeConsumer, FakeProducer, FakeRecord

TOPIC = "training.requested"
TP = TopicPartition(TOPIC, 0)


def request(note: str = "") -> TrainingRequestedEvent:
    return TrainingRequestedEvent(
        producer="test",
        model_key="intent/en-us",
        payload=TrainingRequested(reason=TrainingReason.MANUAL, requested_by="me", note=note),
    )


def record(offset: int, value: bytes) -> FakeRecord:
    return FakeRecord(TOPIC, 0, offset, value, key=b"intent/en-us")


async def audit(event: Event) -> list[Event]:
    return [
        event.follow_up(
            AuditEvent, producer="test", payload=Audit(action="x", actor="y", subject="z")
        )
    ]


def make_loop(batches, handle=audit, fail_times=0):
    journal: list = []
    consumer = FakeConsumer(journal, batches)
    loop, producer = loop_over(consumer, handle, max_failures=5, fail_times=fail_times)
    return loop, consumer, producer, journal


async def test_commits_offset_plus_one_only_after_producing() -> None:
    events = [request("a"), request("b")]
    loop, consumer, producer, journal = make_loop(
        [[record(0, events[0].to_bytes()), record(1, events[1].to_bytes())]]
    )
    await loop.run()
    sends = [i for i, entry in enumerate(journal) if entry[0] == "send"]
    commits = [i for i, entry in enumerate(journal) if entry[0] == "commit"]
    assert len(sends) == 2 and commits
    assert max(sends) < min(commits)
    assert consumer.committed[TP] == 2
    assert [json.loads(v)["event_type"] for _, v, _, _ in producer.sent] == ["audit", "audit"]


async def test_bad_payload_goes_to_dlq_with_reason_and_the_loop_carries_on() -> None:
    good = request("good")
    loop, consumer, producer, _ = make_loop(
        [
            [
                record(0, b'{"event_type": "training.requested", "payload": {}}'),
                record(1, good.to_bytes()),
            ]
        ]
    )
    await loop.run()
    dead = [s for s in producer.sent if s[0] == f"{TOPIC}.dlq"]
    assert len(dead) == 1
    _, value, key, headers = dead[0]
    assert value == b'{"event_type": "training.requested", "payload": {}}'  # original bytes
    assert key == b"intent/en-us"
    reason = dict(headers)["dlq.reason"].decode()
    assert "producer: Field required" in reason
    assert dict(headers)["dlq.source_offset"] == b"0"
    handled = [s for s in producer.sent if s[0] == "audit"]
    assert len(handled) == 1
    assert consumer.committed[TP] == 2
    dlq_count = loop.metrics.registry.get_sample_value(
        "driftloop_test_dlq_messages_total", {"topic": TOPIC, "reason": "schema"}
    )
    assert dlq_count == 1


async def test_permanent_error_from_handler_is_dead_lettered() -> None:
    async def reject(event: Event) -> list[Event]:
        raise PermanentError("label set is empty", code="no_labels")

    loop, consumer, producer, _ = make_loop([[record(0, request().to_bytes())]], handle=reject)
    await loop.run()
    assert [s[0] for s in producer.sent] == [f"{TOPIC}.dlq"]
    assert dict(producer.sent[0][3])["dlq.reason_code"] == b"no_labels"
    assert consumer.committed[TP] == 1


async def test_retryable_error_that_escapes_commits_nothing_for_that_message() -> None:
    calls = []

    async def flaky(event: Event) -> list[Event]:
        calls.append(event.event_id)
        if event.payload.note == "poison":
            raise RetryableError("MLflow is down")
        return await audit(event)

    loop, consumer, _, journal = make_loop(
        [
            [
                record(0, request("fine").to_bytes()),
                record(1, request("poison").to_bytes()),
                record(2, request("never reached").to_bytes()),
            ]
        ],
        handle=flaky,
    )
    with pytest.raises(RetryableError, match="MLflow is down"):
        await loop.run()
    # The first message was fully handled and is committed; the failing one is not.
    assert consumer.committed[TP] == 1
    assert all(entry[1] != {TP: 2} for entry in journal if entry[0] == "commit")
    assert len(calls) == 1 + 3  # one good call, three attempts at the poison message
    assert ("consumer.stop",) in journal and ("producer.stop",) in journal


async def test_transient_produce_failures_are_retried_without_losing_the_message() -> None:
    loop, consumer, producer, _ = make_loop([[record(0, request().to_bytes())]], fail_times=2)
    await loop.run()
    assert [s[0] for s in producer.sent] == ["audit"]
    assert consumer.committed[TP] == 1


async def test_stop_finishes_the_current_message_commits_and_returns() -> None:
    events = [request(str(i)) for i in range(3)]
    loop: ServiceLoop

    async def stop_after_first(event: Event) -> list[Event]:
        loop.stop()  # as SIGTERM would, while this message is being handled
        return await audit(event)

    loop, consumer, producer, _ = make_loop(
        [[record(i, e.to_bytes()) for i, e in enumerate(events)]], handle=stop_after_first
    )
    await loop.run()
    assert len(producer.sent) == 1
    assert consumer.committed[TP] == 1  # the other two are redelivered after restart
    assert loop.state.stopped


async def test_readiness_state_follows_the_clients() -> None:
    loop, consumer, _, _ = make_loop([[record(0, request().to_bytes())]])
    assert not loop.state.joined_group and not loop.state.producer_started
    consumer.on_empty = None

    seen = {}

    async def check(event: Event) -> list[Event]:
        seen["joined"] = loop.state.joined_group
        seen["producer"] = loop.state.producer_started
        loop.stop()
        return []

    loop.handle = check
    await loop.run()
    assert seen == {"joined": True, "producer": True}
    assert loop.state.heartbeat_age() < float("inf")


async def test_commit_floor_holds_back_offsets_of_state_kept_in_memory() -> None:
    held = {"floor": 1}  # the service still needs offset 1 and later
    loop, consumer, _, journal = make_loop(
        [
            [
                record(0, request("a").to_bytes()),
                record(1, request("b").to_bytes()),
                record(2, request("c").to_bytes()),
            ]
        ]
    )
    loop.commit_floor = lambda tp: held["floor"]
    consumer.on_empty = None
    polls = {"n": 0}

    async def release_then_stop() -> list[Event]:
        polls["n"] += 1
        if polls["n"] == 2:
            held["floor"] = None  # the state was published: nothing is held any more
        if polls["n"] == 3:
            loop.stop()
        return []

    loop.flush = release_then_stop
    await loop.run()
    commits = [entry[1][TP] for entry in journal if entry[0] == "commit"]
    assert commits == [1, 3]  # never past the floor while it held; all once released


async def test_flush_outputs_are_published_before_the_commit() -> None:
    loop, consumer, producer, journal = make_loop([[record(0, request().to_bytes())]])
    buffered: list[Event] = []

    async def buffer(event: Event) -> list[Event]:
        buffered.extend(await audit(event))
        return []

    async def flush() -> list[Event]:
        out, buffered[:] = list(buffered), []
        return out

    loop.handle, loop.flush = buffer, flush
    await loop.run()
    kinds = [entry[0] for entry in journal if entry[0] in ("send", "commit")]
    assert kinds == ["send", "commit"]
    assert [s[0] for s in producer.sent] == ["audit"]
    assert consumer.committed[TP] == 1


async def test_an_idle_poll_waits_no_longer_than_the_next_flush_is_due() -> None:
    loop, consumer, _, _ = make_loop([[record(0, request().to_bytes())]])
    due_in = iter([0.2504, None, 0.0, 7.0])  # seconds, as the service reports them
    polls = {"n": 0}

    async def flush() -> list[Event]:
        polls["n"] += 1
        if polls["n"] == 4:
            loop.stop()
        return []

    loop.flush, loop.flush_due_in = flush, lambda: next(due_in)
    consumer.on_empty = None
    await loop.run()
    # rounded up to whole ms (never early), nothing due → the poll timeout, capped by it
    assert consumer.poll_timeouts_ms == [251, loop.poll_timeout_ms, 0, loop.poll_timeout_ms]


async def test_a_revoke_waits_for_the_flush_in_progress() -> None:
    # aiokafka runs the rebalance listener in its own task, possibly while a flush awaits
    # its work: the service's buffer must not change under the flush.
    loop, _, producer, _ = make_loop([[record(0, request().to_bytes())]])
    started, release, order = asyncio.Event(), asyncio.Event(), []

    async def slow_flush() -> list[Event]:
        started.set()
        await release.wait()
        order.append("flush done")
        return await audit(request())

    async def on_revoked(partitions) -> None:
        order.append("revoked")

    loop.flush, loop.on_revoked = slow_flush, on_revoked
    await loop.producer.start()
    await loop.consumer.start()
    loop.consumer.subscribe(topics=[TOPIC], listener=_Rebalance(loop))
    polling = asyncio.create_task(loop.poll_once())
    await started.wait()
    revoking = asyncio.create_task(_Rebalance(loop).on_partitions_revoked({TP}))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not revoking.done() and order == []
    release.set()
    await asyncio.gather(polling, revoking)
    assert order == ["flush done", "revoked"]
    assert [s[0] for s in producer.sent] == ["audit", "audit"]  # the record's, the flush's


async def test_a_failed_flush_commits_nothing_it_buffered() -> None:
    loop, consumer, producer, _ = make_loop(
        [[record(0, request("a").to_bytes()), record(1, request("b").to_bytes())]]
    )
    buffered: list[Event] = []

    async def buffer(event: Event) -> list[Event]:
        buffered.extend(await audit(event))
        return []

    async def flush() -> list[Event]:
        out, buffered[:] = list(buffered), []  # the service lets go of its buffer here
        return out

    loop.handle, loop.flush = buffer, flush
    loop.commit_floor = lambda tp: 0 if buffered else None  # holds offset 0 while buffered
    producer.fail_times = 10**6  # the broker never acknowledges
    with pytest.raises(RetryableError):
        await loop.run()
    assert producer.sent == []
    assert consumer.committed.get(TP, 0) == 0  # both messages will be read again


async def test_cancellation_is_not_retried() -> None:
    started = asyncio.Event()
    calls = []

    async def slow(event: Event) -> list[Event]:
        calls.append(1)
        started.set()
        await asyncio.sleep(30)
        return []

    loop, consumer, _, _ = make_loop([[record(0, request().to_bytes())]], handle=slow)
    task = asyncio.create_task(loop.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]
    assert TP not in consumer.committed


async def test_an_unsendable_dead_letter_keeps_its_reason_without_the_bytes() -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    loop, consumer, producer, _ = make_loop([[record(0, b"x" * 100)]])
    original_send = producer.send

    async def picky_send(topic, value, key=None, headers=None):
        if len(value) > 10:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(MessageSizeTooLargeError("too large"))
            return future
        return await original_send(topic, value, key=key, headers=headers)

    producer.send = picky_send
    await loop.run()
    ((topic, value, _, headers),) = producer.sent
    assert topic == f"{TOPIC}.dlq" and value == b""
    assert "too large" in dict(headers)["dlq.value_dropped"].decode()
    assert dict(headers)["dlq.reason_code"] == b"invalid_json"
    assert consumer.committed[TP] == 1


async def test_a_revoke_mid_batch_stops_handling_that_partition() -> None:
    handled = []
    loop: ServiceLoop

    async def revoke_during_first(event: Event) -> list[Event]:
        handled.append(event.payload.note)
        if len(handled) == 1:
            # The coordinator revokes while this record is in flight: it must wait for it.
            asyncio.get_running_loop().create_task(consumer.listener.on_partitions_revoked({TP}))
            await asyncio.sleep(0)
        return await audit(event)

    loop, consumer, _, journal = make_loop(
        [[record(i, request(str(i)).to_bytes()) for i in range(4)]], handle=revoke_during_first
    )
    await loop.run()
    assert handled == ["0"]  # the rest belongs to the new owner now
    commits = [entry[1] for entry in journal if entry[0] == "commit"]
    assert commits == [{TP: 1}]  # committed by the revoke, after the record finished


# ---------------------------------------------------------------- poison inputs


class ProcessDied(BaseException):
    """Stands in for a kill -9 in the middle of a handler: nothing after it runs."""


def loop_over(
    consumer: FakeConsumer, handle, *, max_failures=3, track_in_flight=False, fail_times=0
):
    """A fresh loop (a new process) over the same consumer group state."""
    producer = FakeProducer(consumer.journal, fail_times=fail_times)
    loop = ServiceLoop(
        service="test",
        topics=[TOPIC],
        decode=lambda r: decode_event(r.value),
        handle=handle,
        consumer=consumer,
        producer=producer,
        retry=RetryPolicy(
            attempts=3, initial_backoff_s=0.001, max_backoff_s=0.001, max_failures=max_failures
        ),
        track_in_flight=track_in_flight,
    )
    consumer.on_empty = loop.stop
    return loop, producer


def redeliver(consumer: FakeConsumer, records: list[FakeRecord]) -> None:
    """What Kafka does for the next process: deliver from the committed offset."""
    start = consumer.committed.get(TP, 0)
    consumer.batches = [[r for r in records if r.offset >= start]]
    del consumer._joined  # the new process joins the group again


async def test_a_handler_bug_on_one_input_dead_letters_it_and_the_loop_moves_on() -> None:
    calls: list[str] = []

    async def year_one_overflows(event: Event) -> list[Event]:
        calls.append(event.payload.note)
        if event.payload.note == "year 1":
            raise OverflowError("date value out of range")
        return await audit(event)

    records = [record(0, request("year 1").to_bytes()), record(1, request("fine").to_bytes())]
    loop, consumer, producer, _ = make_loop([records], handle=year_one_overflows)
    loop.retry = RetryPolicy(attempts=3, initial_backoff_s=0.001, max_backoff_s=0.001)
    await loop.run()  # no exception: the process does not crash-loop
    assert calls == ["year 1"] * 5 + ["fine"]  # the default: 5 failures, then the DLQ
    ((dlq_topic, value, _, headers), (out, *_)) = producer.sent
    assert (dlq_topic, out) == (f"{TOPIC}.dlq", "audit")
    assert value == records[0].value
    h = dict(headers)
    assert h["dlq.reason_code"] == b"handler_failed"
    assert h["dlq.exception_type"] == b"OverflowError"
    assert h["dlq.failures"] == b"5"
    assert b"date value out of range" in h["dlq.reason"]
    assert consumer.committed[TP] == 2 and consumer.metadata[TP] == ""  # note cleared


async def test_failures_noted_in_kafka_outlive_the_process() -> None:
    failures_before_death = 2
    calls = []

    async def fails_then_dies(event: Event) -> list[Event]:
        calls.append(event.payload.note)
        if event.payload.note == "poison":
            if len(calls) % (failures_before_death + 1) == 0:
                raise ProcessDied
            raise ValueError("bad input")
        return await audit(event)

    records = [record(0, request("poison").to_bytes()), record(1, request("fine").to_bytes())]
    consumer = FakeConsumer([], [records])
    loop, _ = loop_over(consumer, fails_then_dies, max_failures=4)
    with pytest.raises(ProcessDied):
        await loop.run()
    assert consumer.committed[TP] == 0  # nothing past the poison
    assert '"failures": 2' in consumer.metadata[TP]
    redeliver(consumer, records)
    loop, producer = loop_over(consumer, fails_then_dies, max_failures=4)
    await loop.run()
    # Two more failures reach four in all: this process dead-letters it, does not die.
    assert calls == ["poison"] * 3 + ["poison"] * 2 + ["fine"]
    assert [s[0] for s in producer.sent] == [f"{TOPIC}.dlq", "audit"]
    assert dict(producer.sent[0][3])["dlq.failures"] == b"4"
    assert consumer.committed[TP] == 2


async def test_an_input_that_kills_the_process_is_dead_lettered_after_max_failures() -> None:
    calls = []

    async def kills(event: Event) -> list[Event]:
        calls.append(event.payload.note)
        if event.payload.note == "oom":
            raise ProcessDied  # an OOM kill: no exception handler ever sees it
        return await audit(event)

    records = [
        record(0, request("fine").to_bytes()),
        record(1, request("oom").to_bytes()),
        record(2, request("after").to_bytes()),
    ]
    consumer = FakeConsumer([], [records])
    for _ in range(3):
        loop, _ = loop_over(consumer, kills, track_in_flight=True)
        with pytest.raises(ProcessDied):
            await loop.run()
        redeliver(consumer, records)
    assert consumer.committed[TP] == 1  # the first record's progress was kept
    loop, producer = loop_over(consumer, kills, track_in_flight=True)
    await loop.run()
    assert calls == ["fine", "oom", "oom", "oom", "after"]
    assert [s[0] for s in producer.sent] == [f"{TOPIC}.dlq", "audit"]
    headers = dict(producer.sent[0][3])
    assert headers["dlq.reason_code"] == b"handler_failed"
    assert headers["dlq.source_offset"] == b"1"
    assert consumer.committed[TP] == 3 and consumer.metadata[TP] == ""


@pytest.mark.parametrize("track_in_flight", [False, True])
@pytest.mark.parametrize(
    "outage", [RetryableError("MLflow is down"), ConnectionRefusedError("mlflow:5000")]
)
async def test_an_outage_is_not_counted_as_the_inputs_fault(
    outage: Exception, track_in_flight: bool
) -> None:
    async def mlflow_down(event: Event) -> list[Event]:
        raise outage

    records = [record(0, request("fine").to_bytes())]
    consumer = FakeConsumer([], [records])
    for _ in range(4):  # more restarts than max_failures
        loop, producer = loop_over(
            consumer, mlflow_down, max_failures=2, track_in_flight=track_in_flight
        )
        with pytest.raises(type(outage)):
            await loop.run()
        redeliver(consumer, records)
        assert producer.sent == []  # never dead-lettered: the outage is not the input's fault
    assert consumer.committed.get(TP, 0) == 0
    assert '"in_flight": true' not in consumer.metadata.get(TP, "")


async def test_a_handler_that_recovers_clears_its_note() -> None:
    calls = []

    async def fails_once(event: Event) -> list[Event]:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("flaky")
        return await audit(event)

    loop, consumer, producer, _ = make_loop([[record(0, request().to_bytes())]], handle=fails_once)
    await loop.run()
    assert [s[0] for s in producer.sent] == ["audit"]
    assert consumer.committed[TP] == 1 and consumer.metadata[TP] == ""


@pytest.mark.parametrize(
    ("error", "dead_lettered"),
    [
        ("MessageSizeTooLargeError", True),
        ("RecordTooLargeError", True),
        ("TopicAuthorizationFailedError", False),
        ("KafkaTimeoutError", False),
        ("ProducerFenced", False),
        ("OutOfOrderSequenceNumber", False),
    ],
)
async def test_only_errors_about_the_record_itself_dead_letter_valid_input(
    error: str, dead_lettered: bool
) -> None:
    import aiokafka.errors

    loop, consumer, producer, _ = make_loop([[record(0, request().to_bytes())]])
    original_send = producer.send

    async def refuse_outputs(topic, value, key=None, headers=None):
        if topic == "audit":
            future = asyncio.get_running_loop().create_future()
            future.set_exception(getattr(aiokafka.errors, error)())
            return future
        return await original_send(topic, value, key=key, headers=headers)

    producer.send = refuse_outputs
    if dead_lettered:
        await loop.run()
        assert [s[0] for s in producer.sent] == [f"{TOPIC}.dlq"]
        assert dict(producer.sent[0][3])["dlq.reason_code"] == b"unpublishable"
        assert consumer.committed[TP] == 1
    else:
        with pytest.raises(RetryableError, match=error):
            await loop.run()
        assert producer.sent == []  # valid input is never dead-lettered for the cluster's fault
        assert TP not in consumer.committed


async def test_a_flush_dead_letters_one_item_and_publishes_the_rest() -> None:
    from driftloop_common.runtime.loop import DeadLetter

    loop, consumer, producer, _ = make_loop(
        [[record(0, request("a").to_bytes()), record(1, request("b").to_bytes())]]
    )
    buffered: list[Event] = []

    async def buffer(event: Event) -> list[Event]:
        buffered.append(event)
        return []

    async def flush() -> list:
        out: list = []
        for offset, event in enumerate(buffered):
            if event.payload.note == "a":
                error = PermanentError("text cannot be stored", code="unencodable_text")
                out.append(DeadLetter(TOPIC, {0: [offset]}, b'{"id": "a"}', b"k", error))
            else:
                out += await audit(event)
        buffered.clear()
        return out

    loop.handle, loop.flush = buffer, flush
    await loop.run()
    assert [s[0] for s in producer.sent] == [f"{TOPIC}.dlq", "audit"]
    _, value, key, headers = producer.sent[0]
    h = dict(headers)
    assert (value, key) == (b'{"id": "a"}', b"k")
    assert h["dlq.reason_code"] == b"unencodable_text"
    assert json.loads(h["dlq.source_offsets"]) == {"0": [0]}
    assert consumer.committed[TP] == 2


async def test_a_publish_outage_after_the_handler_is_not_a_death_of_the_record() -> None:
    """The handler succeeded; the outputs' topic refused us (an ACL). Restarts must not
    count the in-flight note as a process that died on this input."""
    import aiokafka.errors

    records = [record(0, request("fine").to_bytes())]
    consumer = FakeConsumer([], [records])
    for _ in range(3):
        loop, producer = loop_over(consumer, audit, max_failures=2, track_in_flight=True)

        async def refused(topic, value, key=None, headers=None):
            future = asyncio.get_running_loop().create_future()
            future.set_exception(aiokafka.errors.TopicAuthorizationFailedError())
            return future

        producer.send = refused
        with pytest.raises(RetryableError):
            await loop.run()
        redeliver(consumer, records)
    loop, producer = loop_over(consumer, audit, max_failures=2, track_in_flight=True)
    await loop.run()  # the ACL is fixed: the record is handled, not dead-lettered
    assert [s[0] for s in producer.sent] == ["audit"]
    assert consumer.committed[TP] == 1 and consumer.metadata[TP] == ""


async def test_a_reason_quoting_a_lone_surrogate_still_reaches_the_dlq() -> None:
    async def quotes_the_input(event: Event) -> list[Event]:
        raise ValueError("cannot store text: \udfff")

    records = [record(0, request().to_bytes())]
    consumer = FakeConsumer([], [records])
    loop, producer = loop_over(consumer, quotes_the_input, max_failures=2)
    await loop.run()
    ((topic, _, _, headers),) = producer.sent
    assert topic == f"{TOPIC}.dlq"
    assert b"\\udfff" in dict(headers)["dlq.reason"]
    assert consumer.committed[TP] == 1


async def test_a_killing_input_above_the_commit_floor_is_still_counted() -> None:
    """A service holding state (the collector) commits at its floor, below the failing
    record: the records replayed from the floor must not reset the failing one's count."""
    calls = []

    async def kills(event: Event) -> list[Event]:
        calls.append(event.payload.note)
        if event.payload.note == "oom":
            raise ProcessDied
        return []

    records = [record(0, request("held").to_bytes()), record(1, request("oom").to_bytes())]
    consumer = FakeConsumer([], [records])
    for _ in range(2):
        loop, _ = loop_over(consumer, kills, max_failures=2, track_in_flight=True)
        loop.commit_floor = lambda tp: 0  # record 0 stays held in memory
        with pytest.raises(ProcessDied):
            await loop.run()
        redeliver(consumer, records)
    assert consumer.committed[TP] == 0
    loop, producer = loop_over(consumer, kills, max_failures=2, track_in_flight=True)
    loop.commit_floor = lambda tp: 0
    await loop.run()
    assert calls == ["held", "oom", "held", "oom", "held"]
    assert [s[0] for s in producer.sent] == [f"{TOPIC}.dlq"]
    assert b"process died" in dict(producer.sent[0][3])["dlq.exception_type"]


async def test_a_decoder_that_crashes_on_absurd_bytes_dead_letters_them() -> None:
    def decode(r):
        if r.offset == 0:
            raise RecursionError("maximum recursion depth exceeded")
        return decode_event(r.value)

    loop, consumer, producer, _ = make_loop([[record(0, b"[[[["), record(1, request().to_bytes())]])
    loop.decode = decode
    await loop.run()
    assert [s[0] for s in producer.sent] == [f"{TOPIC}.dlq", "audit"]
    assert dict(producer.sent[0][3])["dlq.reason_code"] == b"invalid_event"
    assert b"RecursionError" in dict(producer.sent[0][3])["dlq.reason"]
    assert consumer.committed[TP] == 2


async def test_a_flush_output_kafka_refuses_for_good_goes_to_the_dlq_alone() -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    loop, consumer, producer, _ = make_loop([[record(0, request("a").to_bytes())]])
    buffered: list[Event] = []

    async def buffer(event: Event) -> list[Event]:
        buffered.append(event)
        return []

    async def flush() -> list[Event]:
        out = [e for event in buffered for e in await audit(event)] + [request("huge")]
        buffered.clear()
        return out

    original_send = producer.send

    async def picky(topic, value, key=None, headers=None):
        if topic == TOPIC:  # the second output's topic has a lower max.message.bytes
            future = asyncio.get_running_loop().create_future()
            future.set_exception(MessageSizeTooLargeError())
            return future
        return await original_send(topic, value, key=key, headers=headers)

    producer.send = picky
    loop.handle, loop.flush = buffer, flush
    await loop.run()
    topics = [s[0] for s in producer.sent]
    assert topics.count("audit") >= 1 and topics[-1] == f"{TOPIC}.dlq"
    assert dict(producer.sent[-1][3])["dlq.reason_code"] == b"unpublishable"
    assert consumer.committed[TP] == 1


async def test_a_failed_commit_in_a_revoke_still_forgets_the_partition() -> None:
    from aiokafka.errors import KafkaConnectionError

    loop, consumer, _, _ = make_loop([[record(0, request().to_bytes())]])
    loop.retry = RetryPolicy(attempts=1)
    revoked = []

    async def forget(partitions):
        revoked.append(partitions)

    loop.on_revoked = forget
    consumer.subscribe(topics=[TOPIC], listener=_Rebalance(loop))
    await loop.poll_once()

    async def broken_commit(offsets):
        raise KafkaConnectionError()

    consumer.commit = broken_commit
    loop._handled[TP] = 5  # something left to commit
    with pytest.raises(RetryableError):
        await consumer.listener.on_partitions_revoked({TP})
    assert TP not in loop._live and TP not in loop.state.assignment
    assert revoked == [{TP}]
