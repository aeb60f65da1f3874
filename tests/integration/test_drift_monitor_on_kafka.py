"""The drift-monitor as a process on a real broker: drift in, decisions out, crash-safe."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    InteractionEmbedded,
    InteractionEmbeddedEvent,
    ModelKey,
)
from driftloop_common.runtime.metrics import metric_prefix
from driftloop_local.processes import free_port
from tests.integration.helpers import make_topics, produce, wait_for
from tests.unit.drift_data import ENCODER, Traffic, shifted_weights

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = Traffic(seed=21)


def embedded(key: ModelKey, n: int, rng, start: datetime, weights=None) -> list:
    x, labels = TRAFFIC.sample(n, rng, weights)
    step = timedelta(hours=4) / n
    return [
        InteractionEmbeddedEvent(
            producer="test",
            model_key=key,
            payload=InteractionEmbedded(
                conversation_id=str(uuid.uuid4()),
                language=key.language,
                completed_at=start + i * step,
                embedding=x[i].tolist(),
                encoder=ENCODER,
                label=labels[i],
            ),
        )
        for i in range(n)
    ]


class Monitor:
    def __init__(self, bootstrap: str, name: str, log: Path, **env: str) -> None:
        self.log = log
        self.port = free_port()
        self.prefix = metric_prefix(name)  # driftloop_<service>
        self.env = {
            **os.environ,
            "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLOOP_SERVICE_NAME": name,
            "DRIFTLOOP_HTTP_PORT": str(self.port),
            "DRIFTLOOP_BOOTSTRAP_ROWS": "2000",
            "DRIFTLOOP_CHECK_EVERY_ROWS": "1000",
            "DRIFTLOOP_MIN_ROWS": "500",
            "DRIFTLOOP_DETECTORS": '["component_psi", "label"]',
            "DRIFTLOOP_POLL_TIMEOUT_MS": "200",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop_drift_monitor"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    async def ready(self) -> None:
        async with httpx.AsyncClient(timeout=2) as http:

            async def ok() -> bool:
                try:
                    return (
                        await http.get(f"http://127.0.0.1:{self.port}/readyz")
                    ).status_code == 200
                except httpx.HTTPError:
                    return False

            for _ in range(300):
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                if await ok():
                    return
                await asyncio.sleep(0.2)
            raise AssertionError("drift-monitor never became ready")

    async def checks(self, key: ModelKey, result: str) -> float:
        return await self.metric("checks_total", model_key=key, result=result)

    async def metric(self, name: str, **labels: object) -> float:
        async with httpx.AsyncClient(timeout=2) as http:
            text = (await http.get(f"http://127.0.0.1:{self.port}/metrics")).text
        wanted = ",".join(f'{k}="{re.escape(str(v))}"' for k, v in labels.items())
        match = re.search(rf"^{self.prefix}_{name}\{{{wanted}\}} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    async def readyz(self) -> tuple[int, dict]:
        async with httpx.AsyncClient(timeout=2) as http:
            answer = await http.get(f"http://127.0.0.1:{self.port}/readyz")
        return answer.status_code, answer.json()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


async def requests_for(bootstrap: str, keys: set[str], seconds: float) -> list[dict]:
    consumer = AIOKafkaConsumer(
        topics.TRAINING_REQUESTED,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found = []
    try:
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    body = json.loads(r.value)
                    if body["model_key"] in keys:
                        found.append(body)
    finally:
        await consumer.stop()
    return found


async def test_shifted_key_drifts_stable_key_does_not_and_a_restart_changes_nothing(
    kafka_bootstrap: str, fresh_name, tmp_path: Path
) -> None:
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    run = uuid.uuid4().hex[:8]
    stable = ModelKey.parse(f"intent/xs-{run}")  # fresh keys: no other test's traffic
    shifted = ModelKey.parse(f"intent/xd-{run}")
    rng = np.random.default_rng(5)
    start = datetime.now(UTC) - timedelta(hours=10)
    events = (
        embedded(stable, 2000, rng, start)
        + embedded(shifted, 2000, rng, start)
        + embedded(stable, 2000, rng, start + timedelta(hours=5))
        + embedded(shifted, 2000, rng, start + timedelta(hours=5), shifted_weights(4, 0.3))
    )
    monitor = Monitor(kafka_bootstrap, fresh_name("drift-monitor"), tmp_path / "monitor.log")
    monitor.start()
    try:
        await monitor.ready()
        await produce(kafka_bootstrap, topics.INTERACTIONS_EMBEDDED, events)
        await wait_for_async(lambda: monitor.checks(stable, "stable"), "a stable check")
        await wait_for_async(lambda: monitor.checks(shifted, "drift"), "a drift check")
        keys = {str(stable), str(shifted)}
        first = await requests_for(kafka_bootstrap, keys, 3)
        assert [(r["model_key"], r["payload"]["reason"]) for r in first] == [
            (str(shifted), "drift")
        ]
        assert 1000 <= first[0]["payload"]["drift"]["window_size"] <= 2000  # checked per 1000

        monitor.kill()  # mid-window, without a chance to commit anything
        monitor.start()
        await monitor.ready()
        # The window is rebuilt from Kafka by time and reaches the same decision…
        await wait_for_async(lambda: monitor.checks(shifted, "drift"), "the same decision")
        assert await monitor.checks(stable, "drift") == 0
        # …and the restored cooldown keeps it from asking for a second training.
        again = await requests_for(kafka_bootstrap, keys, 3)
        assert [r["event_id"] for r in again] == [first[0]["event_id"]]

        # 60 labelled examples of an intent the stable key's baseline never saw.
        unseen = embedded(stable, 60, rng, start + timedelta(hours=9, minutes=30))
        unseen = [
            e.model_copy(
                update={"payload": e.payload.model_copy(update={"label": "crypto_wallet"})}
            )
            for e in unseen
        ]
        await produce(kafka_bootstrap, topics.INTERACTIONS_EMBEDDED, unseen)
        found: list[dict] = []
        deadline = asyncio.get_running_loop().time() + 60
        while not found:
            assert asyncio.get_running_loop().time() < deadline, "no new_intent request"
            found = [
                r
                for r in await requests_for(kafka_bootstrap, {str(stable)}, 2)
                if r["payload"]["reason"] == "new_intent"
            ]
        assert [r["payload"]["new_label"] for r in found] == ["crypto_wallet"]
    finally:
        monitor.kill()


async def test_while_mlflow_answers_503_the_key_waits_unready_then_uses_the_champion(
    kafka_bootstrap: str, mlflow_uri: str, fresh_name, tmp_path: Path
) -> None:
    from tests.integration.test_drift_monitor_baselines_on_mlflow import Proxy, register

    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    key = ModelKey.parse(f"intent/xw-{uuid.uuid4().hex[:8]}")
    register(mlflow_uri, key, tmp_path / "champion", baseline=True, alias=True)
    proxy = Proxy(mlflow_uri)
    proxy.failing = ("/api/",)  # every MLflow call: 503
    log = tmp_path / "monitor.log"
    monitor = Monitor(
        kafka_bootstrap,
        fresh_name("drift-monitor"),
        log,
        DRIFTLOOP_MLFLOW__TRACKING_URI=f"http://driftloop:s3cret-pw@127.0.0.1:{proxy.port}",
        DRIFTLOOP_BASELINE_RETRY_MAX_S="1",
        DRIFTLOOP_BOOTSTRAP_ROWS="500",  # fewer rows than sent: a bootstrap would happen
    )
    monitor.start()
    try:
        await monitor.ready()
        rows = embedded(key, 1200, np.random.default_rng(7), datetime.now(UTC) - timedelta(hours=5))
        await produce(kafka_bootstrap, topics.INTERACTIONS_EMBEDDED, rows)

        state = {"model_key": key, "state": "unavailable"}
        await wait_for_async(
            lambda: monitor.metric("baseline_state", **state),
            "the key's baseline to show as unavailable",
        )
        status, body = await monitor.readyz()
        assert (status, body["checks"]["drift_baselines_available"]) == (503, False)

        async def all_waiting() -> float:
            return float(await monitor.metric("pending_rows", model_key=key) == 1200)

        await wait_for_async(all_waiting, "the 1200 rows to wait for the baseline")
        assert await monitor.metric("baseline_load_failures_total", model_key=key)

        proxy.failing = ()  # MLflow is back

        async def checked() -> float:
            return await monitor.checks(key, "stable") + await monitor.checks(key, "drift")

        await wait_for_async(checked, "a check against the champion's baseline")

        async def ready() -> float:  # other tests' keys on the topic wait out their backoff
            return float((await monitor.readyz())[0] == 200)

        await wait_for_async(ready, "/readyz once every baseline could be asked for")
        loaded = {"model_key": key, "state": "loaded"}
        assert await monitor.metric("baseline_state", **loaded) == 1
        assert await monitor.metric("pending_rows", model_key=key) == 0
        # All 1200 rows, observed at once when the baseline came: none was lost waiting.
        assert await monitor.metric("window_rows", model_key=key) == 1200
    finally:
        monitor.kill()
        proxy.close()
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is a JSON log record
    messages = [r["message"] for r in records]
    assert f"baseline for {key}: {key.registered_model} v1" in "\n".join(messages)
    assert not [m for m in messages if "bootstrap" in m and str(key) in m]
    # The history replay logs through the service's JSON logging (it runs in `on_start`).
    assert any(re.match(r"restored \d+ earlier training requests", m) for m in messages)
    assert "s3cret-pw" not in log.read_text()


async def wait_for_async(probe, what: str, timeout_s: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await probe()) < 1:
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


del wait_for
