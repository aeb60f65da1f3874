"""The promoter with a Genesys NLU domain target, as processes on a real broker, a real
MLflow server and the Genesys simulator as a real HTTP server: killed mid-promotion and
restarted it ends with one live version; under a 429 storm it completes within the
concurrency limit; a training that ends in Error leaves the champion live; a rollback
puts the previous version back on Genesys too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Event,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    RollbackRequested,
    RollbackRequestedEvent,
)
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag
from driftloop_local.processes import free_port
from tests.integration.helpers import (
    ServiceProcess,
    events_until,
    hang_guard,
    make_topics,
    produce,
    register_versions,
)
from tests.promotion_rows import fill_store, run_params

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SECRET = "sim-secret-for-tests"
DOMAIN = "support"
MODEL = "intent-model"
TARGETS = ["predictor", "genesys-nlu", "model-config"]


@dataclass
class Setup:
    key: ModelKey
    client: MlflowClient
    sim: str
    promoter: ServiceProcess

    async def sim_get(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.sim, timeout=10) as http:
            return (await http.get(path)).json()

    async def faults(self, **faults: Any) -> None:
        async with httpx.AsyncClient(base_url=self.sim, timeout=10) as http:
            (await http.post("/admin/faults", json=faults)).raise_for_status()

    async def api(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.sim, timeout=10) as http:
            token = (
                await http.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=("driftloop", SECRET),
                )
            ).json()["access_token"]
            answer = await http.get(path, headers={"Authorization": f"Bearer {token}"})
            return answer.json()

    async def domain_versions(self) -> list[dict[str, Any]]:
        path = f"/api/v2/languageunderstanding/domains/{DOMAIN}/versions?pageSize=100"
        return (await self.api(path))["entities"]

    def champion(self) -> str | None:
        found = registry.version_by_alias(self.client, self.key.registered_model, "champion")
        return found.version if found else None

    def tags(self, version: int) -> dict[str, str]:
        return self.client.get_model_version(self.key.registered_model, str(version)).tags


@contextlib.asynccontextmanager
async def simulator(tmp_path: Path, **env: str) -> AsyncIterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftloop_simulator"],
        env={
            **os.environ,
            "DRIFTLOOP_SIM_PORT": str(port),
            "DRIFTLOOP_SIM_CLIENT_SECRET": SECRET,
            "DRIFTLOOP_SIM_DOMAINS": json.dumps([DOMAIN]),
            "DRIFTLOOP_SIM_MODELS": json.dumps([MODEL]),
            "DRIFTLOOP_SIM_TRAINING_DELAY_S": "3",
            "DRIFTLOOP_SIM_RATE_PER_S": "200",
            "DRIFTLOOP_SIM_BURST": "400",
            **env,
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "simulator.log").open("ab"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        log = tmp_path / "simulator.log"
        async with httpx.AsyncClient(timeout=2) as http, hang_guard(60, log.read_text):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        break
                assert proc.poll() is None, f"the simulator exited:\n{log.read_text()}"
                await asyncio.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


@pytest.fixture
async def setup(kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path) -> AsyncIterator[Setup]:
    key = ModelKey.parse(f"intent/en-{uuid.uuid4().hex[:6]}")
    name = key.registered_model
    client = MlflowClient(mlflow_uri)
    register_versions(client, name, 3, run_params())
    store = tmp_path / "store"
    fill_store(str(store), language=key.language)
    await make_topics(kafka_bootstrap, *topics.ALL_TOPICS)
    async with simulator(tmp_path) as sim:
        promoter = ServiceProcess(
            "driftloop_promoter",
            {
                "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
                "DRIFTLOOP_MLFLOW__TRACKING_URI": mlflow_uri,
                "DRIFTLOOP_SERVICE_NAME": f"promoter-{uuid.uuid4().hex[:6]}",
                "DRIFTLOOP_AUTO_OFFSET_RESET": "latest",
                "DRIFTLOOP_STORE_URL": str(store),
                "DRIFTLOOP_TARGETS": json.dumps({str(key): TARGETS}),
                "DRIFTLOOP_GENESYS_DOMAINS": json.dumps({str(key): DOMAIN}),
                "DRIFTLOOP_ML_MODELS": json.dumps({str(key): MODEL}),
                "DRIFTLOOP_GENESYS__CLIENT_ID": "driftloop",
                "DRIFTLOOP_GENESYS__CLIENT_SECRET": SECRET,
                "DRIFTLOOP_GENESYS__API_BASE_URL": sim,
                "DRIFTLOOP_GENESYS_CLIENT__BACKOFF_BASE_S": "0.2",
                "DRIFTLOOP_GENESYS_CLIENT__BACKOFF_CAP_S": "1",
                "DRIFTLOOP_GENESYS_NLU__POLL_S": "0.3",
                "DRIFTLOOP_GENESYS_NLU__F1_FLOOR": "0.5",
            },
            tmp_path / "promoter.log",
        )
        await promoter.start()
        await promoter.assigned()
        try:
            yield Setup(key, client, sim, promoter)
        finally:
            await promoter.stop()


def evaluated(key: ModelKey, version: int) -> ModelEvaluatedEvent:
    return ModelEvaluatedEvent(
        producer="test",
        model_key=key,
        payload=ModelEvaluated(registered_model=key.registered_model, version=version, passed=True),
    )


async def outcome(bootstrap: str, s: Setup, topic: str, version: int) -> Event:
    [found] = await events_until(
        bootstrap,
        topic,
        lambda events: bool(events),
        keep=lambda e: e.model_key == s.key and getattr(e.payload, "version", version) == version,
        timeout_s=180,
        on_timeout=s.promoter.log_tail,
    )
    return found


KILL_POINTS = [  # (target, the note after which the process dies), in the order they happen
    ("genesys-nlu", "draft_version_id"),  # a draft exists, empty
    ("genesys-nlu", "uploaded"),  # the draft holds the utterances; its training runs
    ("genesys-nlu", "gated"),  # trained and gated, not published
    ("model-config", "chunks"),  # uploads under way
    ("genesys-nlu", "published"),  # live on Genesys, the alias not moved yet
    ("model-config", "activated"),  # the last step before the alias moves
]


@pytest.mark.parametrize(("target", "note"), KILL_POINTS, ids=[f"{t}.{n}" for t, n in KILL_POINTS])
async def test_killed_mid_promotion_it_resumes_to_one_live_version(
    kafka_bootstrap: str, setup: Setup, target: str, note: str
) -> None:
    s = setup
    await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated(s.key, 1)])
    async with hang_guard(120, s.promoter.log_tail):
        while not any(Tag.is_target(k, target, note) for k in s.tags(1)):
            await asyncio.sleep(0.05)
    await s.promoter.stop(signal.SIGKILL)
    assert s.champion() is None
    await s.promoter.start()
    await s.promoter.assigned()

    promoted = await outcome(kafka_bootstrap, s, topics.MODEL_PROMOTED, 1)
    assert promoted.payload.targets == TARGETS
    assert s.champion() == "1"
    versions = await s.domain_versions()
    assert len(versions) == 1 and versions[0]["published"]  # one draft, resumed, published once
    model = await s.api(f"/api/v2/ml/models/{MODEL}")
    assert (model["status"], model["version"]) == ("ACTIVE", "1")
    chunks = int(
        next(v for k, v in s.tags(1).items() if Tag.is_target(k, "model-config", "chunks"))
    )
    stats = await s.sim_get("/admin/stats")
    # Every chunk stored once: a chunk in flight when the process died is sent again with
    # the same chunkKey, which the platform answers with the first upload.
    assert stats["uploads"] == chunks


async def test_under_a_429_storm_it_completes_within_the_concurrency_limit(
    kafka_bootstrap: str, setup: Setup
) -> None:
    s = setup
    await s.faults(storm_429=15, storm_retry_after_s=1)
    await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated(s.key, 1)])
    await outcome(kafka_bootstrap, s, topics.MODEL_PROMOTED, 1)
    stats = await s.sim_get("/admin/stats")
    answered_429 = sum(by_status.get("429", 0) for by_status in stats["calls"].values())
    assert answered_429 >= 15  # every one waited out (Retry-After), none fatal
    assert stats["peak_in_flight"] <= 4  # the client's default limit
    assert s.champion() == "1"


async def test_a_failed_training_leaves_the_champion_and_a_rollback_restores_genesys(
    kafka_bootstrap: str, setup: Setup
) -> None:
    s = setup
    await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated(s.key, 1)])
    await outcome(kafka_bootstrap, s, topics.MODEL_PROMOTED, 1)

    await s.faults(fail_next_training=True)
    await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated(s.key, 2)])
    failed = await outcome(kafka_bootstrap, s, topics.PROMOTION_FAILED, 2)
    assert failed.payload.target == "genesys-nlu" and "failed" in failed.payload.error
    assert s.champion() == "1"
    assert [v["published"] for v in await s.domain_versions()].count(True) == 1

    await produce(kafka_bootstrap, topics.MODEL_EVALUATED, [evaluated(s.key, 3)])
    await outcome(kafka_bootstrap, s, topics.MODEL_PROMOTED, 3)
    assert s.champion() == "3"
    request = RollbackRequestedEvent(
        producer="test",
        model_key=s.key,
        payload=RollbackRequested(reason="confidence fell", requested_by="test"),
    )
    await produce(kafka_bootstrap, topics.ROLLBACK_REQUESTED, [request])
    [rolled] = await events_until(
        kafka_bootstrap,
        topics.MODEL_ROLLED_BACK,
        lambda events: bool(events),
        keep=lambda e: e.model_key == s.key,
        timeout_s=180,
        on_timeout=s.promoter.log_tail,
    )
    assert (rolled.payload.from_version, rolled.payload.to_version) == (3, 1)
    assert s.champion() == "1"
    model = await s.api(f"/api/v2/ml/models/{MODEL}")
    assert (model["status"], model["version"]) == ("ACTIVE", "1")  # v1's data served again
    published = [v for v in await s.domain_versions() if v["published"]]
    newest = max(published, key=lambda v: v["datePublished"])
    assert newest["description"].startswith(f"{s.key.registered_model} v1 ")  # rebuilt from v1
