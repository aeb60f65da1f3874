"""The model-config target against the simulator in-process, with a fake MLflow record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from driftloop_common.contracts.errors import RetryableError
from driftloop_common.contracts.events import EncoderInfo, InteractionEmbedded, ModelKey
from driftloop_common.genesys import GenesysClient, GenesysClientOptions, GenesysMetrics
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import GenesysSettings
from driftloop_common.storage.interactions import InteractionStore
from driftloop_common.storage.registry import Tag
from driftloop_promoter.model_config import ModelConfigOptions, ModelConfigTarget
from driftloop_promoter.targets import DeployError, Promotion
from driftloop_simulator.app import create_app
from driftloop_simulator.settings import FaultSettings, SimulatorSettings
from driftloop_simulator.state import SimulatorState

SECRET = "model-config-secret"
MODEL_ID = "model-1"
REGISTERED = "intent-en-us"
ATTEMPT = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"
KEY = ModelKey.parse("intent/en-us")
ENCODER = EncoderInfo(id="sentence-transformers/all-MiniLM-L6-v2", precision="fp32")
DAY1 = datetime(2026, 11, 24, tzinfo=UTC)
PARAMS = {
    "train_start": DAY1.isoformat(),
    "train_end": (DAY1 + timedelta(hours=12)).isoformat(),
    "validation_start": (DAY1 + timedelta(hours=12)).isoformat(),
    "validation_end": (DAY1 + timedelta(days=1)).isoformat(),
}
UPLOAD = "POST /api/v2/ml/trainingdata"
PATCH = "PATCH /api/v2/ml/models/{modelId}"


class Crash(Exception):
    """The promoter dies in the middle of an upload."""


class FakeMlflow:
    """What `Promotion` asks of an MlflowClient: the run's params and version tags."""

    def __init__(self, params: dict[str, str]) -> None:
        self.params = params
        self.tags: dict[str, dict[str, str]] = {}

    def get_run(self, run_id: str) -> Any:
        return SimpleNamespace(data=SimpleNamespace(params=dict(self.params)))

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags.setdefault(version, {})[key] = value

    def version(self, number: int) -> Any:
        """The version as a restarted promoter reads it back: only what was tagged."""
        tags = dict(self.tags.get(str(number), {}))
        return SimpleNamespace(name=REGISTERED, version=str(number), run_id=f"r{number}", tags=tags)

    def promotion(self, number: int = 3, attempt: str = ATTEMPT) -> Promotion:
        return Promotion(KEY, self.version(number), None, attempt, self, "http://mlflow.test")  # type: ignore[arg-type]

    def noted(self, number: int, name: str, attempt: str = ATTEMPT) -> str | None:
        return self.tags.get(str(number), {}).get(Tag.target("model-config", attempt, name))


def embedded(i: int, at: datetime, label: str | None) -> InteractionEmbedded:
    vector = np.random.default_rng(i).standard_normal(384).astype(np.float32)
    return InteractionEmbedded(
        conversation_id=f"c{i:04d}",
        language="en-us",
        completed_at=at,
        embedding=vector.tolist(),
        encoder=ENCODER,
        label=label,
        text=f"text of conversation {i}",
        queue="support",
        media_type="voice",
    )


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """120 labelled rows in the windows, and rows the upload must leave out: unlabelled ones
    inside, labelled ones after `validation_end`."""
    url = str(tmp_path / "store")
    rows = [
        embedded(i, DAY1 + timedelta(minutes=10 * i), ["billing", "password"][i % 2])
        for i in range(120)
    ]
    rows += [embedded(200 + i, DAY1 + timedelta(minutes=7 * i + 3), None) for i in range(5)]
    rows += [embedded(300 + i, DAY1 + timedelta(days=2, minutes=i), "billing") for i in range(5)]
    InteractionStore(url).append(rows)
    return url


EXPECTED = {f"c{i:04d}" for i in range(120)}


class Sim:
    def __init__(self, **overrides: Any) -> None:
        base: dict[str, Any] = {
            "client_secret": SECRET,
            "rate_per_s": 1000,
            "burst": 1000,
            "min_chunk": 10,
            "max_chunk": 50,
        }
        self.app = create_app(SimulatorSettings(**(base | overrides)))
        self.state: SimulatorState = self.app.state.simulator

    def stats(self) -> dict[str, Any]:
        return self.state.stats.snapshot()

    def calls(self, route: str) -> int:
        return sum(self.stats()["calls"].get(route, {}).values())

    def uploaded(self, training_data_id: str) -> list[str]:
        return [
            i["conversationId"] for i in self.state.training_data[training_data_id].interactions
        ]


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def make_target() -> AsyncIterator[Callable[..., ModelConfigTarget]]:
    made: list[ModelConfigTarget] = []

    def make(
        sim: Sim,
        store_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        options: GenesysClientOptions | None = None,
        **kw: Any,
    ) -> ModelConfigTarget:
        client = GenesysClient(
            GenesysSettings(
                client_id="driftloop", client_secret=SecretStr(SECRET), api_base_url="http://sim"
            ),
            options or GenesysClientOptions(max_in_flight=5),
            transport=transport or httpx.ASGITransport(app=sim.app),
            metrics=GenesysMetrics(LoopMetrics("test")),
            sleep=no_sleep,
        )
        target = ModelConfigTarget(client, MODEL_ID, store_url, ModelConfigOptions(**kw))
        made.append(target)
        return target

    yield make
    for target in made:
        await target.close()


class CrashAfter(httpx.AsyncBaseTransport):
    """The simulator in-process, until `uploads` chunks went through: the next upload dies."""

    def __init__(self, app: Any, uploads: int) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.left = uploads

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/v2/ml/trainingdata":
            if self.left == 0:
                raise Crash("the promoter was killed")
            self.left -= 1
        return await self.inner.handle_async_request(request)


def assert_every_row_once(sim: Sim, mlflow: FakeMlflow, chunks: int, size: int) -> list[str]:
    ids = [mlflow.noted(3, f"chunk.{i}") for i in range(chunks)]
    assert None not in ids
    seen = [c for i in ids for c in sim.uploaded(str(i))]
    assert sorted(seen) == sorted(EXPECTED)  # each labelled row of the windows, once
    for i, data_id in enumerate(ids):
        data = sim.state.training_data[str(data_id)]
        assert 10 <= len(data.interactions) <= size
        assert data.extra == {"chunkKey": f"{ATTEMPT}:v3:{i}", "chunkCount": chunks}
    return [str(i) for i in ids]


async def test_uploads_every_row_once_in_chunks_then_activates(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim(faults=FaultSettings(slow_s=0.02, storm_429=3))  # overlapping calls, 429s
    mlflow = FakeMlflow(PARAMS)
    target = make_target(sim, store_url, chunk_size=25, concurrency=3)
    promotion = mlflow.promotion()

    await target.prepare(promotion)
    ids = assert_every_row_once(sim, mlflow, chunks=5, size=25)  # 120 rows: 5 of 24
    stats = sim.stats()
    assert (stats["uploads"], stats["uploaded_interactions"]) == (5, 120)
    assert stats["rate_limited"] + stats["faults_injected"] == 3  # waited out by the client
    assert 2 <= stats["peak_in_flight"] <= 3  # concurrent, never above `concurrency`
    assert sim.state.models.get(MODEL_ID) is None or sim.state.models[MODEL_ID].status != "ACTIVE"

    await target.activate(promotion)
    model = sim.state.models[MODEL_ID]
    assert (model.status, model.training_data_id, model.version) == ("ACTIVE", ids[0], "3")
    assert mlflow.noted(3, "training_data_id") == ids[0]
    assert mlflow.noted(3, "activated") == ids[0]
    assert sim.calls(PATCH) == 1


async def test_a_crash_midway_resumes_with_the_missing_chunks_only(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim()
    mlflow = FakeMlflow(PARAMS)
    dying = make_target(
        sim, store_url, transport=CrashAfter(sim.app, 3), chunk_size=15, concurrency=3
    )
    with pytest.raises(Crash):
        await dying.prepare(mlflow.promotion())
    done = [i for i in range(8) if mlflow.noted(3, f"chunk.{i}") is not None]
    assert 1 <= len(done) <= 3 and mlflow.noted(3, "chunks") == "8"
    before = sim.stats()["uploads"]
    assert before <= 3

    restarted = make_target(sim, store_url, chunk_size=15, concurrency=3)
    promotion = mlflow.promotion()  # what a restarted promoter reads back from MLflow
    await restarted.prepare(promotion)
    # Noted chunks are never sent again; a chunk that went through but was not noted is sent
    # again with its chunkKey, which the platform answers with the first upload: 8 stored.
    assert sim.stats()["uploads"] == 8
    ids = assert_every_row_once(sim, mlflow, chunks=8, size=15)  # 120 rows: 8 of 15
    await restarted.activate(promotion)
    assert sim.state.models[MODEL_ID].training_data_id == ids[0]


class DiesNotingChunks(FakeMlflow):
    """The promoter dies after noting the row count and before noting the chunk count."""

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        if key == Tag.target("model-config", ATTEMPT, "chunks"):
            raise Crash
        super().set_model_version_tag(name, version, key, value)


async def test_a_crash_between_the_row_and_chunk_notes_resumes_and_notes_the_chunks(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim()
    dying = DiesNotingChunks(PARAMS)
    with pytest.raises(Crash):
        await make_target(sim, store_url, chunk_size=30).prepare(dying.promotion())
    assert dying.noted(3, "rows") == "120" and dying.noted(3, "chunks") is None
    assert sim.stats()["uploads"] == 0

    mlflow = FakeMlflow(PARAMS)
    mlflow.tags = dying.tags  # what a restarted promoter reads back
    await make_target(sim, store_url, chunk_size=30).prepare(mlflow.promotion())
    assert mlflow.noted(3, "chunks") == "4"
    assert_every_row_once(sim, mlflow, chunks=4, size=30)
    assert sim.stats()["uploads"] == 4


async def test_a_redelivery_uploads_and_patches_nothing_again(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim()
    mlflow = FakeMlflow(PARAMS)
    target = make_target(sim, store_url, chunk_size=50, concurrency=4)
    first = mlflow.promotion()
    await target.prepare(first)
    await target.activate(first)
    assert (sim.stats()["uploads"], sim.calls(PATCH)) == (3, 1)  # 120 rows: 40 each

    again = mlflow.promotion()
    await target.prepare(again)
    await target.activate(again)  # the model serves it already: read, not PATCHed
    assert (sim.stats()["uploads"], sim.calls(PATCH)) == (3, 1)

    # Switched back to another version in between (a later target failed): PATCHed again.
    sim.state.models[MODEL_ID].version = "2"
    await target.activate(mlflow.promotion())
    assert (sim.state.models[MODEL_ID].version, sim.calls(PATCH)) == ("3", 2)


async def test_another_attempt_reuses_a_complete_upload(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    """A rollback to a version (a new attempt) PATCHes its trainingDataId back."""
    sim = Sim()
    mlflow = FakeMlflow(PARAMS)
    target = make_target(sim, store_url)
    first = mlflow.promotion()
    await target.prepare(first)
    await target.activate(first)
    head = mlflow.noted(3, "training_data_id")
    sim.state.models[MODEL_ID].training_data_id = None

    rollback = "9a8b7c6d-0000-0000-0000-000000000002"
    back = mlflow.promotion(attempt=rollback)
    await target.prepare(back)
    await target.activate(back)
    assert sim.stats()["uploads"] == 3
    assert mlflow.noted(3, "training_data_id", rollback) == head
    assert sim.state.models[MODEL_ID].training_data_id == head


async def test_a_refused_patch_is_a_deploy_error_with_genesys_message(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim()
    mlflow = FakeMlflow(PARAMS)
    target = make_target(sim, store_url)
    promotion = mlflow.promotion()
    await promotion.note("model-config", "training_data_id", "never-uploaded")
    with pytest.raises(DeployError) as caught:
        await target.activate(promotion)
    assert caught.value.target == "model-config"
    assert "400" in caught.value.reason and "never-uploaded" in caught.value.reason
    assert "contextId" in caught.value.reason
    assert mlflow.noted(3, "activated") is None


async def test_a_refused_upload_is_a_deploy_error(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim(auto_create=False)  # the model does not exist: 404
    target = make_target(sim, store_url)
    with pytest.raises(DeployError, match="404"):
        await target.prepare(FakeMlflow(PARAMS).promotion())


async def test_a_retryable_failure_passes_through(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim(faults=FaultSettings(error_burst=100))
    options = GenesysClientOptions(max_retries=1)
    target = make_target(sim, store_url, options=options)
    with pytest.raises(RetryableError):
        await target.prepare(FakeMlflow(PARAMS).promotion())


async def test_a_run_without_windows_or_rows_cannot_deploy(
    store_url: str, make_target: Callable[..., ModelConfigTarget]
) -> None:
    sim = Sim()
    target = make_target(sim, store_url)
    with pytest.raises(DeployError, match="train window"):
        await target.prepare(FakeMlflow({"train_start": PARAMS["train_start"]}).promotion())
    later = DAY1 + timedelta(days=30)
    empty = {k: later.isoformat() for k in PARAMS}
    with pytest.raises(DeployError, match="no labelled rows"):
        await target.prepare(FakeMlflow(empty).promotion())
    assert sim.stats()["uploads"] == 0


@pytest.mark.parametrize(("chunk_size", "concurrency"), [(9, 4), (51, 4), (50, 2), (50, 6)])
def test_limits_outside_the_guide_are_refused(chunk_size: int, concurrency: int) -> None:
    with pytest.raises(ValueError, match=r"chunk_size|concurrency"):
        ModelConfigOptions(chunk_size=chunk_size, concurrency=concurrency)
