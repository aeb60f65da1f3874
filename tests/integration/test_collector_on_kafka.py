"""The collector as a process: Genesys events in any order → one embedded interaction each."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftloop_common.contracts import topics
from driftloop_common.runtime.metrics import metric_prefix
from driftloop_common.storage.interactions import InteractionStore
from driftloop_local.processes import free_port
from driftloop_synthetic import GeneratorConfig, Interaction, OutputFormat, generate, kafka_records
from tests.integration.helpers import make_topics

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def fresh_interactions(count: int, start: datetime, span: timedelta) -> list[Interaction]:
    seed = int.from_bytes(os.urandom(4), "big")  # new conversation ids every run
    return list(generate(GeneratorConfig(seed=seed, count=count, start=start, end=start + span)))


async def from_now_on(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer of `topic` whose start is pinned before anything is published."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await consumer.start()
    for tp in consumer.assignment():
        await consumer.position(tp)
    return consumer


async def publish(bootstrap: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topics.INTERACTIONS_RAW, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


class CollectorProcess:
    def __init__(self, bootstrap: str, name: str, folder: Path, wrapup_wait_s: float) -> None:
        self.port, self.log = free_port(), folder / "collector.log"
        self.store_url = str(folder / "store")
        self.prefix = metric_prefix(name)  # driftloop_<service>
        self.env = {
            **os.environ,
            "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLOOP_SERVICE_NAME": name,
            "DRIFTLOOP_HTTP_PORT": str(self.port),
            "DRIFTLOOP_STORE_URL": self.store_url,
            "DRIFTLOOP_WRAPUP_WAIT_S": str(wrapup_wait_s),
            "DRIFTLOOP_SETTLE_S": "0.5",
            "DRIFTLOOP_POLL_TIMEOUT_MS": "200",
        }
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop_collector"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        async with httpx.AsyncClient(timeout=2) as http:
            for _ in range(600):
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if (await http.get(self.url("/readyz"))).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("collector never became ready")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def open_conversations(self) -> float:
        async with httpx.AsyncClient(timeout=2) as http:
            text = (await http.get(self.url("/metrics"))).text
        for line in text.splitlines():
            if line.startswith(f"{self.prefix}_open_conversations "):
                return float(line.split()[1])
        return 0.0

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            await asyncio.to_thread(self.proc.wait, 30)


async def embedded_for(
    consumer: AIOKafkaConsumer, wanted: set[str], timeout_s: float, log: Path
) -> dict[str, dict]:
    """Read `interactions.embedded` until every wanted conversation has arrived."""
    seen: dict[str, dict] = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while set(seen) != wanted:
        assert asyncio.get_running_loop().time() < deadline, (
            f"{len(seen)}/{len(wanted)} embedded; log:\n{log.read_text()[-3000:]}"
        )
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            for r in batch:
                body = json.loads(r.value)
                if body["payload"]["conversation_id"] in wanted:
                    seen[body["payload"]["conversation_id"]] = body
    return seen


async def test_genesys_events_become_embedded_interactions_and_store_rows(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    start = datetime.now(UTC) - timedelta(days=2)
    interactions = fresh_interactions(40, start, timedelta(days=1))
    wanted = {i.conversation_id: i for i in interactions}
    records = list(
        kafka_records(interactions, OutputFormat.GENESYS_EVENTBRIDGE, shuffle_window=15, seed=3)
    )
    bad = json.dumps(
        {  # a real Genesys topic the collector has no use for
            "detail-type": "v2.users.{id}.presence",
            "detail": {"topicName": "v2.users.0b1c.presence", "eventBody": {"id": "0b1c"}},
        }
    ).encode()

    embedded = await from_now_on(kafka_bootstrap, topics.INTERACTIONS_EMBEDDED)
    dead = await from_now_on(kafka_bootstrap, f"{topics.INTERACTIONS_RAW}.dlq")
    collector = CollectorProcess(kafka_bootstrap, fresh_name("collector"), tmp_path, 2)
    try:
        await collector.start()
        await publish(kafka_bootstrap, [*records, (b"x", bad)])
        seen = await embedded_for(embedded, set(wanted), 120, collector.log)
        dead_letters = []
        deadline = asyncio.get_running_loop().time() + 60
        while not dead_letters:
            assert asyncio.get_running_loop().time() < deadline, "no dead letter"
            for batch in (await dead.getmany(timeout_ms=500)).values():
                dead_letters += [r for r in batch if r.value == bad]
        reason = dict(dead_letters[0].headers)["dlq.reason_code"].decode()
        assert reason == "unknown_topic"
    finally:
        await collector.stop()
        for consumer in (embedded, dead):
            await consumer.stop()

    for conversation_id, body in seen.items():
        source = wanted[conversation_id]
        payload = body["payload"]
        assert body["model_key"] == f"intent/{source.language}"
        assert payload["label"] == source.intent  # from the wrap-up code
        assert payload["text"]  # the customer's final utterances
        assert len(payload["embedding"]) == 384
        assert payload["encoder"] == {
            "id": "sentence-transformers/all-MiniLM-L6-v2",
            "precision": "fp32",
        }
    store = InteractionStore(collector.store_url)
    stored = set()
    for language in {i.language for i in interactions}:
        table = store.read(language, start - timedelta(days=1), start + timedelta(days=2))
        stored |= set(table.column("conversation_id").to_pylist())
    assert stored == set(wanted)


async def test_a_killed_collector_rebuilds_open_conversations_from_kafka(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    start = datetime.now(UTC) - timedelta(days=1)
    interactions = fresh_interactions(20, start, timedelta(hours=12))
    wanted = {i.conversation_id: i for i in interactions}
    records = list(kafka_records(interactions, OutputFormat.GENESYS_EVENTBRIDGE))
    wrapups = [r for r in records if b".wrapup" in r[1]]
    first_part = [r for r in records if b".wrapup" not in r[1]]

    embedded = await from_now_on(kafka_bootstrap, topics.INTERACTIONS_EMBEDDED)
    collector = CollectorProcess(kafka_bootstrap, fresh_name("collector"), tmp_path, 600)
    try:
        await collector.start()
        await publish(kafka_bootstrap, first_part)  # no wrap-up yet: every conversation stays open
        deadline = asyncio.get_running_loop().time() + 60
        while await collector.open_conversations() < len(wanted):
            assert asyncio.get_running_loop().time() < deadline, collector.log.read_text()[-2000:]
            await asyncio.sleep(0.3)
        await collector.stop(signal.SIGKILL)  # the open conversations existed only in memory

        await collector.start()
        await publish(kafka_bootstrap, wrapups)
        seen = await embedded_for(embedded, set(wanted), 90, collector.log)
    finally:
        await collector.stop()
        await embedded.stop()
    for conversation_id, body in seen.items():
        # The transcript read before the crash was read again: text and label are whole.
        assert body["payload"]["label"] == wanted[conversation_id].intent
        assert body["payload"]["text"]


def notification(topic: str, cid: str, **body: object) -> tuple[bytes, bytes]:
    event_time = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp() * 1000)
    value = {
        "topicName": topic.format(id=cid),
        "eventBody": {"eventTime": event_time, "conversationId": cid, **body},
    }
    return cid.encode(), json.dumps(value).encode()


def said(cid: str, text: str, uid: str) -> tuple[bytes, bytes]:
    final = {
        "utteranceId": uid,
        "isFinal": True,
        "channel": "EXTERNAL",
        "dialect": "en-US",
        "alternatives": [{"confidence": 0.9, "offsetMs": 0, "transcript": text}],
    }
    return notification("v2.conversations.{id}.transcription", cid, transcripts=[final])


def ended(cid: str) -> tuple[bytes, bytes]:
    return notification("v2.detail.events.conversation.{id}.customer.end", cid, mediaType="VOICE")


def wrapped(cid: str, code: str) -> tuple[bytes, bytes]:
    return notification("v2.detail.events.conversation.{id}.wrapup", cid, wrapupCode=code)


async def publish_to(bootstrap: str, partition: int, records: list[tuple[bytes, bytes]]) -> None:
    """In this order, into one partition (a conversation's pieces share one by their key)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(
                topics.INTERACTIONS_RAW, value, key=key, partition=partition
            )
    finally:
        await producer.stop()


async def test_a_restart_inside_an_emitted_conversation_never_re_emits_it_poorer(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    # A has pieces at offsets n, n+2, n+3, n+4 and is emitted; B, open at n+1, holds the
    # commit floor there. After a restart the collector reads A's last three pieces again.
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    a, b, marker = (f"{name}-{os.urandom(6).hex()}" for name in ("a", "b", "marker"))
    embedded = await from_now_on(kafka_bootstrap, topics.INTERACTIONS_EMBEDDED)
    collector = CollectorProcess(kafka_bootstrap, fresh_name("collector"), tmp_path, 600)
    try:
        await collector.start()
        await publish_to(
            kafka_bootstrap,
            0,
            [
                said(a, "my card was stolen", "a1"),
                said(b, "hello is anyone there", "b1"),  # no end: open for max_wait
                said(a, "please block it", "a2"),
                ended(a),
                wrapped(a, "lost_card"),
            ],
        )
        first = await embedded_for(embedded, {a}, 90, collector.log)
        assert first[a]["payload"]["text"] == "my card was stolen please block it"
        await collector.stop()  # SIGTERM: commits up to B's piece, not past it

        await collector.start()
        # Read in order after A's pieces: once the marker is out, so would A's copy be.
        await publish_to(
            kafka_bootstrap,
            0,
            [said(marker, "where is my parcel", "m1"), ended(marker), wrapped(marker, "parcel")],
        )
        again: list[dict] = []
        deadline = asyncio.get_running_loop().time() + 90
        while not any(e["payload"]["conversation_id"] == marker for e in again):
            assert asyncio.get_running_loop().time() < deadline, collector.log.read_text()[-3000:]
            for batch in (await embedded.getmany(timeout_ms=500)).values():
                again += [json.loads(r.value) for r in batch]
    finally:
        await collector.stop()
        await embedded.stop()

    assert [e["payload"]["text"] for e in again if e["payload"]["conversation_id"] == a] == []
    table = InteractionStore(collector.store_url).read(
        "en-us", datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1)
    )
    rows = {r["conversation_id"]: r for r in table.to_pylist()}
    assert rows[a]["text"] == "my card was stolen please block it"
    assert (rows[a]["label"], rows[a]["pieces"]) == ("lost_card", 4)
