"""Crash between produce and commit; the CLI publishes real events; a service process answers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from driftloop_common.contracts import topics
from driftloop_common.runtime.metrics import metric_prefix
from driftloop_local.processes import free_port
from tests.integration.helpers import make_topics, produce, read_all, request, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, **kw)


async def test_crash_after_producing_before_committing_redelivers_and_keeps_one_effect(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    source, out, group = fresh_name("in"), fresh_name("out"), fresh_name("g")
    await make_topics(kafka_bootstrap, source, out, partitions=1)
    event = request(7, "en-us")
    await produce(kafka_bootstrap, source, [event])
    worker = [
        sys.executable,
        "-m",
        "tests.integration.crash_worker",
        kafka_bootstrap,
        source,
        out,
        group,
        str(tmp_path),
    ]

    crashed = await asyncio.to_thread(_run, [*worker, "--crash-before-commit"])
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    restarted = await asyncio.to_thread(_run, worker)
    assert restarted.returncode == 0, restarted.stderr[-2000:]

    calls = (tmp_path / "calls.log").read_text().split()
    assert calls == [str(event.event_id)] * 2  # the message was delivered twice…
    assert [p.name for p in tmp_path.glob("effect-*")] == [
        f"effect-{event.event_id}"
    ]  # …one effect
    outputs = await read_all(kafka_bootstrap, out, expect=2)
    assert len(outputs) == 2
    assert len({json.loads(r.value)["event_id"] for r in outputs}) == 1  # same id: dedupable

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        assert await consumer.committed(TopicPartition(source, 0)) == 1
    finally:
        await consumer.stop()


async def test_an_input_that_kills_the_process_is_dead_lettered_after_two_deaths(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    """kill -9 inside the handler, twice: the count lives in Kafka (the committed offset's
    metadata), so the third process dead-letters the input instead of dying again."""
    source, out, group = fresh_name("in"), fresh_name("out"), fresh_name("g")
    await make_topics(kafka_bootstrap, source, out, f"{source}.dlq", partitions=1)
    fine, poison, last = (
        request(1, "en-us"),
        _noted(request(2, "en-us"), "poison"),
        _noted(request(3, "en-us"), "last"),
    )
    await produce(kafka_bootstrap, source, [fine, poison, last])
    worker = [
        sys.executable,
        "-m",
        "tests.integration.crash_worker",
        *(kafka_bootstrap, source, out, group, str(tmp_path)),
        "--die-on-poison",
    ]
    for _ in range(2):
        died = await asyncio.to_thread(_run, worker)
        assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    survived = await asyncio.to_thread(_run, worker)
    assert survived.returncode == 0, survived.stderr[-2000:]

    calls = (tmp_path / "calls.log").read_text().split()
    ids = [str(e.event_id) for e in (fine, poison, last)]
    assert calls == [ids[0], ids[1], ids[1], ids[2]]  # the poison twice, then never again
    (dead,) = await read_all(kafka_bootstrap, f"{source}.dlq", expect=1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dlq.reason_code"] == "handler_failed"
    assert headers["dlq.source_offset"] == "1" and headers["dlq.failures"] == "2"
    assert json.loads(dead.value)["event_id"] == ids[1]
    outputs = await read_all(kafka_bootstrap, out, expect=2)
    assert sorted(json.loads(r.value)["correlation_id"] for r in outputs) == sorted(
        [str(fine.correlation_id), str(last.correlation_id)]
    )


def _noted(event, note: str):
    return event.model_copy(update={"payload": event.payload.model_copy(update={"note": note})})


async def _latest_offsets(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await consumer.start()
    await wait_for(lambda: bool(consumer.assignment()), what="assignment")
    for tp in consumer.assignment():
        await consumer.position(tp)  # pin the start before anything is published
    return consumer


async def test_event_published_with_the_cli_reaches_a_consumer(kafka_bootstrap: str) -> None:
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    consumer = await _latest_offsets(kafka_bootstrap, topics.TRAINING_REQUESTED)
    try:
        result = await asyncio.to_thread(
            _run,
            [
                sys.executable,
                "-m",
                "driftloop_cli",
                "publish",
                "retrain",
                "--model-type",
                "intent",
                "--language",
                "es-es",
                "--reason",
                "new product launch",
                "--bootstrap",
                kafka_bootstrap,
            ],
        )
        assert result.returncode == 0, result.stderr
        event_id = result.stdout.strip()
        found = None
        deadline = asyncio.get_running_loop().time() + 30
        while found is None and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if json.loads(r.value)["event_id"] == event_id:
                        found = r
        assert found is not None, f"event {event_id} never arrived"
        body = json.loads(found.value)
        assert found.key == b"intent/es-es"
        assert body["payload"]["reason"] == "manual"
        assert body["payload"]["note"] == "new product launch"
    finally:
        await consumer.stop()


async def test_service_process_answers_probes_audits_and_stops_gracefully(
    kafka_bootstrap: str, fresh_name
) -> None:
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    audit = await _latest_offsets(kafka_bootstrap, topics.AUDIT)
    port = free_port()
    env = {
        **os.environ,
        "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLOOP_HTTP_PORT": str(port),
        "DRIFTLOOP_SERVICE_NAME": fresh_name("auditor"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftloop_cli", "service", "auditor"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as http:

            async def status(path: str) -> int:
                try:
                    return (await http.get(base + path)).status_code
                except httpx.HTTPError:
                    return 0

            deadline = asyncio.get_running_loop().time() + 60
            while (await status("/readyz")) != 200:
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
                assert asyncio.get_running_loop().time() < deadline, "never ready"
                await asyncio.sleep(0.3)
            assert await status("/healthz") == 200
            event = request(3, "en-us")
            await produce(kafka_bootstrap, topics.TRAINING_REQUESTED, [event])
            record = None
            while record is None:
                for records in (await audit.getmany(timeout_ms=500)).values():
                    for r in records:
                        if json.loads(r.value)["correlation_id"] == str(event.correlation_id):
                            record = json.loads(r.value)
                assert asyncio.get_running_loop().time() < deadline + 30, "no audit record"
            assert record["payload"]["details"]["source_event_id"] == str(event.event_id)
            metrics = (await http.get(base + "/metrics")).text
            prefix = metric_prefix(env["DRIFTLOOP_SERVICE_NAME"])
            assert f'{prefix}_published_total{{topic="audit"}}' in metrics
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        log = proc.stdout.read().decode()
        assert "finishing the current message, committing, stopping" in log
    finally:
        await audit.stop()
        if proc.poll() is None:
            proc.kill()
