"""The collector as a process: Genesys events in any order → one embedded interaction each."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftloop_common import topics
from driftloop_common.local_kafka import free_port
from driftloop_common.store import InteractionStore
from driftloop_synthetic import GeneratorConfig, OutputFormat, generate, kafka_records
from tests.integration.helpers import make_topics

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def _ready(port: int, proc: subprocess.Popen, log: Path) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(600):
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("collector never became ready")


async def test_genesys_events_become_embedded_interactions_and_store_rows(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    start = datetime.now(UTC) - timedelta(days=2)
    interactions = list(
        generate(
            GeneratorConfig(
                seed=int.from_bytes(os.urandom(4), "big"),
                count=40,
                start=start,
                end=start + timedelta(days=1),
            )
        )
    )
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

    embedded = AIOKafkaConsumer(
        topics.INTERACTIONS_EMBEDDED,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="latest",
    )
    dead = AIOKafkaConsumer(
        f"{topics.INTERACTIONS_RAW}.dlq",
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="latest",
    )
    for consumer in (embedded, dead):
        await consumer.start()
        for tp in consumer.assignment():
            await consumer.position(tp)

    port, log = free_port(), tmp_path / "collector.log"
    env = {
        **os.environ,
        "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLOOP_SERVICE_NAME": fresh_name("collector"),
        "DRIFTLOOP_HTTP_PORT": str(port),
        "DRIFTLOOP_STORE_URL": str(tmp_path / "store"),
        "DRIFTLOOP_WRAPUP_WAIT_S": "2",
        "DRIFTLOOP_SETTLE_S": "0.5",
        "DRIFTLOOP_POLL_TIMEOUT_MS": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftloop_collector"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    try:
        await _ready(port, proc, log)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for key, value in records:
                await producer.send(topics.INTERACTIONS_RAW, value, key=key)
            await producer.send_and_wait(topics.INTERACTIONS_RAW, bad, key=b"x")
        finally:
            await producer.stop()

        seen: dict[str, dict] = {}
        deadline = asyncio.get_running_loop().time() + 120
        while set(seen) != set(wanted):
            assert asyncio.get_running_loop().time() < deadline, (
                f"{len(seen)}/{len(wanted)} embedded; log:\n{log.read_text()[-3000:]}"
            )
            for batch in (await embedded.getmany(timeout_ms=500)).values():
                for r in batch:
                    body = json.loads(r.value)
                    if body["payload"]["conversation_id"] in wanted:
                        seen[body["payload"]["conversation_id"]] = body
        dead_letters = []
        while not dead_letters:
            assert asyncio.get_running_loop().time() < deadline, "no dead letter"
            for batch in (await dead.getmany(timeout_ms=500)).values():
                dead_letters += [r for r in batch if r.value == bad]
        reason = dict(dead_letters[0].headers)["dlq.reason_code"].decode()
        assert reason == "unknown_topic"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
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
    store = InteractionStore(str(tmp_path / "store"))
    stored = set()
    for language in {i.language for i in interactions}:
        table = store.read(language, start - timedelta(days=1), start + timedelta(days=2))
        stored |= set(table.column("conversation_id").to_pylist())
    assert stored == set(wanted)


async def _open_conversations(port: int) -> float:
    async with httpx.AsyncClient(timeout=2) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("collector_open_conversations "):
            return float(line.split()[1])
    return 0.0


async def test_a_killed_collector_rebuilds_open_conversations_from_kafka(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    start = datetime.now(UTC) - timedelta(days=1)
    interactions = list(
        generate(
            GeneratorConfig(
                seed=int.from_bytes(os.urandom(4), "big"),
                count=20,
                start=start,
                end=start + timedelta(hours=12),
            )
        )
    )
    wanted = {i.conversation_id: i for i in interactions}
    records = list(kafka_records(interactions, OutputFormat.GENESYS_EVENTBRIDGE))
    wrapups = [r for r in records if b".wrapup" in r[1]]
    first_part = [r for r in records if b".wrapup" not in r[1]]

    embedded = AIOKafkaConsumer(
        topics.INTERACTIONS_EMBEDDED,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="latest",
    )
    await embedded.start()
    for tp in embedded.assignment():
        await embedded.position(tp)
    port, log = free_port(), tmp_path / "collector.log"
    env = {
        **os.environ,
        "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLOOP_SERVICE_NAME": fresh_name("collector"),
        "DRIFTLOOP_HTTP_PORT": str(port),
        "DRIFTLOOP_STORE_URL": str(tmp_path / "store"),
        "DRIFTLOOP_WRAPUP_WAIT_S": "600",
        "DRIFTLOOP_SETTLE_S": "0.5",
        "DRIFTLOOP_POLL_TIMEOUT_MS": "200",
    }

    def launch() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "driftloop_collector"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )

    async def send(batch) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for key, value in batch:
                await producer.send(topics.INTERACTIONS_RAW, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    proc = launch()
    try:
        await _ready(port, proc, log)
        await send(first_part)  # transcripts and ends, but no wrap-up yet: all stay open
        deadline = asyncio.get_running_loop().time() + 60
        while await _open_conversations(port) < len(wanted):
            assert asyncio.get_running_loop().time() < deadline, log.read_text()[-2000:]
            await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)  # the open conversations existed only in memory
        await asyncio.to_thread(proc.wait, 10)

        proc = launch()
        await _ready(port, proc, log)
        await send(wrapups)
        seen: dict[str, dict] = {}
        deadline = asyncio.get_running_loop().time() + 90
        while set(seen) != set(wanted):
            assert asyncio.get_running_loop().time() < deadline, (
                f"{len(seen)}/{len(wanted)} embedded; log:\n{log.read_text()[-3000:]}"
            )
            for batch in (await embedded.getmany(timeout_ms=500)).values():
                for r in batch:
                    body = json.loads(r.value)
                    if body["payload"]["conversation_id"] in wanted:
                        seen[body["payload"]["conversation_id"]] = body
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        await embedded.stop()
    for conversation_id, body in seen.items():
        # The transcript read before the crash was read again: text and label are whole.
        assert body["payload"]["label"] == wanted[conversation_id].intent
        assert body["payload"]["text"]
