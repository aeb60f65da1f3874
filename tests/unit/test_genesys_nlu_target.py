"""The Genesys NLU domain target against the simulator (in-process, over ASGI): a draft
built from the version's rows, trained, gated and published, resumed after a crash,
refused on a failed training, a low report or a worse shadow check."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from driftloop_common.contracts.events import ModelKey
from driftloop_common.genesys import GenesysClient, GenesysClientOptions
from driftloop_common.genesys.batching import body_size
from driftloop_common.runtime.settings import GenesysSettings
from driftloop_promoter.genesys_nlu import GenesysNluOptions, GenesysNluTarget
from driftloop_promoter.targets import DeployError, Promotion
from driftloop_simulator.app import create_app
from driftloop_simulator.settings import SimulatorSettings
from tests.promotion_rows import WORDS, fill_store, run_params

SECRET = "s3cret-for-tests"
DOMAIN = "support"


class FakeMlflow:
    """What a target asks of MLflow: the run's windows, and tags it writes."""

    def __init__(self) -> None:
        self.params = run_params()
        self.tags: dict[str, str] = {}

    def get_run(self, run_id: str) -> Any:
        return SimpleNamespace(data=SimpleNamespace(params=self.params))

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[key] = value


def promotion(mlflow: FakeMlflow, attempt: str = "a1", number: int = 1) -> Promotion:
    version = SimpleNamespace(name="intent-en-us", version=str(number), run_id="r", tags={})
    return Promotion(
        ModelKey.parse("intent/en-us"), version, None, attempt, mlflow, "http://mlflow"
    )


@pytest.fixture
def sim() -> Any:
    return create_app(
        SimulatorSettings(
            client_secret=SECRET, training_delay_s=0, rate_per_s=1000, burst=1000, domains=[DOMAIN]
        )
    )


def target(sim: Any, store: str, **kw: Any) -> GenesysNluTarget:
    client = GenesysClient(
        GenesysSettings(
            client_id="driftloop", client_secret=SecretStr(SECRET), api_base_url="http://sim"
        ),
        GenesysClientOptions(backoff_base_s=0.01, backoff_cap_s=0.02),
        transport=httpx.ASGITransport(app=sim),
    )
    return GenesysNluTarget(client, DOMAIN, store, GenesysNluOptions(poll_s=0.01, **kw))


async def versions(t: GenesysNluTarget) -> list[Any]:
    return await t.client.list_versions(DOMAIN)


async def test_a_version_goes_live_as_a_trained_published_domain_version(
    sim: Any, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    fill_store(store)
    mlflow = FakeMlflow()
    t = target(sim, store, f1_floor=0.5)
    p = promotion(mlflow)
    await t.prepare(p)
    await t.activate(p)
    [live] = await versions(t)
    assert live.published and live.training_status == "Trained"
    assert p.noted(t.name, "published") == live.id == p.noted(t.name, "draft_version_id")
    stored = await t.client.get_version(DOMAIN, live.id, include_utterances=True)
    assert {i.name for i in stored.intents} == set(WORDS)
    assert sum(len(i.utterances) for i in stored.intents) == int(p.noted(t.name, "uploaded"))
    intents = await t.client.detect(DOMAIN, live.id, "my card was stolen block it", "en-us")
    assert max(intents, key=lambda i: i.probability).name == "card_lost"
    await t.close()


async def test_a_redelivery_after_a_crash_resumes_the_same_draft(
    sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "store")
    fill_store(store)
    mlflow = FakeMlflow()
    t = target(sim, store, f1_floor=0.0)
    p = promotion(mlflow)

    async def killed(*args: Any) -> None:
        raise RuntimeError("killed after the draft was created")

    real = t.client.update_version
    monkeypatch.setattr(t.client, "update_version", killed)
    with pytest.raises(RuntimeError):
        await t.prepare(p)
    monkeypatch.setattr(t.client, "update_version", real)
    await t.prepare(p)  # the redelivery, with the notes the first run left
    await t.activate(p)
    await t.activate(p)  # and once more: publishing is not repeated
    assert len(await versions(t)) == 1
    await t.close()


async def test_a_version_whose_windows_hold_no_rows_is_refused(sim: Any, tmp_path: Path) -> None:
    t = target(sim, str(tmp_path / "empty-store"))
    with pytest.raises(DeployError, match="no labelled rows"):
        await t.prepare(promotion(FakeMlflow()))
    await t.close()


async def test_a_training_that_ends_in_error_refuses_the_version(sim: Any, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    fill_store(store)
    t = target(sim, store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim), base_url="http://sim"
    ) as admin:
        await admin.post("/admin/faults", json={"fail_next_training": True})
    with pytest.raises(DeployError, match=r"training .* failed") as refused:
        await t.prepare(promotion(FakeMlflow()))
    assert refused.value.target == "genesys-nlu"
    await t.close()


async def test_a_report_below_the_floor_refuses_the_version(sim: Any, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    fill_store(store, shuffled=True)  # labels that have nothing to do with the texts
    t = target(sim, store, f1_floor=0.8)
    with pytest.raises(DeployError, match="f1_score"):
        await t.prepare(promotion(FakeMlflow()))
    assert not any(v.published for v in await versions(t))
    await t.close()


async def test_a_draft_that_detects_worse_than_the_live_version_is_refused(
    sim: Any, tmp_path: Path
) -> None:
    good, bad = str(tmp_path / "good"), str(tmp_path / "bad")
    fill_store(good)
    fill_store(bad, shuffled=True)
    first = target(sim, good, f1_floor=0.0)
    p1 = promotion(FakeMlflow(), attempt="first")
    await first.prepare(p1)
    await first.activate(p1)
    second = target(sim, bad, f1_floor=0.0)
    with pytest.raises(DeployError, match="newest test labels"):
        await second.prepare(promotion(FakeMlflow(), attempt="second", number=2))
    await first.close()
    await second.close()


def test_a_body_over_the_limit_carries_fewer_utterances_per_intent(
    sim: Any, tmp_path: Path
) -> None:
    from driftloop_promoter.rows import Rows

    rows = Rows([f"utterance number {i} " * 4 for i in range(3000)], ["a", "b", "c"] * 1000)
    options = GenesysNluOptions(max_utterances=1000, body_limit=40_000)
    t = GenesysNluTarget(None, DOMAIN, "", options)  # type: ignore[arg-type]
    body = t.version_body(promotion(FakeMlflow()), rows)
    counts = [len(i.utterances) for i in body.intents]
    assert body_size(body) <= 40_000
    assert 0 < min(counts) and max(counts) < 1000 and len(set(counts)) == 1
