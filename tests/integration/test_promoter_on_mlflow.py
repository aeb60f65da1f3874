"""The promoter's state machine on a real MLflow server: first champion, a later one,
redeliveries, late and rolled-back versions, failing targets and rollbacks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from mlflow import MlflowClient

from driftloop_common.contracts.events import (
    AuditEvent,
    Event,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    PromotionFailedEvent,
    RollbackRequested,
    RollbackRequestedEvent,
)
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag
from driftloop_promoter.promotion import Promoter
from driftloop_promoter.targets import DeployError, PredictorTarget, Promotion
from tests.integration.helpers import register_versions

pytestmark = pytest.mark.integration


class Recording:
    """A target that notes what it did (on the version, as real ones do) and can fail."""

    def __init__(self, name: str, calls: list[str], fail: str | None = None) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    async def prepare(self, promotion: Promotion) -> None:
        if promotion.noted(self.name, "uploaded"):
            self.calls.append(f"{self.name}.prepare v{promotion.number} (resumed)")
            return
        self.calls.append(f"{self.name}.prepare v{promotion.number}")
        if self.fail == "prepare":
            raise DeployError(self.name, "training ended in Error")
        await promotion.note(self.name, "uploaded", "yes")

    async def activate(self, promotion: Promotion) -> None:
        self.calls.append(f"{self.name}.activate v{promotion.number}")
        if self.fail == "activate" and promotion.previous is not None:
            raise DeployError(self.name, "publish refused")
        if self.fail == "crash":
            self.fail = None
            raise RuntimeError("killed")  # the process dies here; Kafka redelivers

    async def close(self) -> None:
        return None


@pytest.fixture
def model(mlflow_uri: str) -> tuple[ModelKey, MlflowClient]:
    key = ModelKey.parse(f"intent/en-{uuid.uuid4().hex[:6]}")
    client = MlflowClient(mlflow_uri)
    register_versions(client, key.registered_model, 3)
    return key, client


def evaluated(key: ModelKey, version: int, passed: bool = True) -> ModelEvaluatedEvent:
    return ModelEvaluatedEvent(
        producer="test",
        model_key=key,
        payload=ModelEvaluated(
            registered_model=key.registered_model,
            version=version,
            passed=passed,
            metrics={"confidence": 0.8, "challenger_accuracy": 0.9},
        ),
    )


def rollback(key: ModelKey, to: int | None = None) -> RollbackRequestedEvent:
    return RollbackRequestedEvent(
        producer="test",
        model_key=key,
        payload=RollbackRequested(reason="confidence fell", requested_by="test", to_version=to),
    )


def promoter(uri: str, make: Callable[[str, Any], Any], names: list[str]) -> Promoter:
    return Promoter(uri, lambda key: names, make)


def split(events: list[Event]) -> tuple[Event, Event, list[str]]:
    """The outcome, its closing audit event, and the steps audited before them."""
    *steps, outcome, closing = events
    assert all(isinstance(e, AuditEvent) for e in steps) and isinstance(closing, AuditEvent)
    return outcome, closing, [e.payload.action for e in steps]


def champion(client: MlflowClient, key: ModelKey) -> str | None:
    found = registry.version_by_alias(client, key.registered_model, registry.CHAMPION)
    return found.version if found else None


def status(client: MlflowClient, key: ModelKey, version: int) -> str | None:
    return client.get_model_version(key.registered_model, str(version)).tags.get(Tag.STATUS)


async def test_a_first_champion_then_a_better_one_and_redeliveries_change_nothing(
    mlflow_uri: str, model
) -> None:
    key, client = model
    p = promoter(mlflow_uri, lambda name, key: PredictorTarget(), ["predictor"])

    first = evaluated(key, 1)
    promoted, audit, steps = split(await p.promote(first))
    assert steps == ["predictor.prepared", "predictor.activated"]
    assert isinstance(promoted, ModelPromotedEvent)
    assert (promoted.payload.version, promoted.payload.previous_version) == (1, None)
    assert promoted.payload.expected_accuracy == 0.9
    assert promoted.payload.confidence_at_promotion == 0.8
    assert audit.payload.action == "model.promoted"
    assert champion(client, key) == "1"

    again = await p.promote(first)  # redelivered after the alias moved
    assert [e.event_id for e in again] == [promoted.event_id]

    second, _, _ = split(await p.promote(evaluated(key, 2)))
    assert (second.payload.version, second.payload.previous_version) == (2, 1)
    assert champion(client, key) == "2"
    assert (status(client, key, 1), status(client, key, 2)) == ("inactive", "champion")

    [late] = await p.promote(evaluated(key, 1))  # an older version's evaluation, late
    assert late.payload.action == "promotion.skipped"
    assert champion(client, key) == "2"
    assert await p.promote(evaluated(key, 3, passed=False)) == []


async def test_a_target_that_refuses_leaves_the_champion_live_and_says_which(
    mlflow_uri: str, model
) -> None:
    key, client = model
    calls: list[str] = []
    ok = promoter(mlflow_uri, lambda name, key: Recording(name, calls), ["genesys-nlu"])
    await ok.promote(evaluated(key, 1))

    failing = promoter(
        mlflow_uri, lambda name, key: Recording(name, calls, fail="prepare"), ["genesys-nlu"]
    )
    failed, audit, steps = split(await failing.promote(evaluated(key, 2)))
    assert steps == []  # refused in its first step
    assert isinstance(failed, PromotionFailedEvent)
    assert (failed.payload.target, failed.payload.version) == ("genesys-nlu", 2)
    assert "training ended in Error" in failed.payload.error
    assert audit.payload.action == "promotion.failed"
    assert champion(client, key) == "1"


async def test_a_failed_activation_switches_the_targets_already_activated_back(
    mlflow_uri: str, model
) -> None:
    key, client = model
    calls: list[str] = []

    def make(name: str, key: ModelKey) -> Recording:
        return Recording(name, calls, fail="activate" if name == "second" else None)

    p = promoter(mlflow_uri, make, ["first", "second"])
    await p.promote(evaluated(key, 1))
    calls.clear()
    failed, _, steps = split(await p.promote(evaluated(key, 2)))
    assert steps == ["first.prepared", "second.prepared", "first.activated", "first.restored"]
    assert isinstance(failed, PromotionFailedEvent) and failed.payload.target == "second"
    assert calls == [
        "first.prepare v2",
        "second.prepare v2",
        "first.activate v2",
        "second.activate v2",
        "first.prepare v1",  # first had gone live with v2: it gets v1 back
        "first.activate v1",
    ]
    assert champion(client, key) == "1"


async def test_a_promotion_killed_midway_resumes_from_its_notes_without_uploading_again(
    mlflow_uri: str, model
) -> None:
    key, client = model
    calls: list[str] = []
    target = Recording("genesys-nlu", calls, fail="crash")
    p = promoter(mlflow_uri, lambda name, key: target, ["genesys-nlu"])
    event = evaluated(key, 1)
    with pytest.raises(RuntimeError):
        await p.promote(event)
    assert champion(client, key) is None  # nothing went live

    promoted, _, _ = split(await p.promote(event))  # the redelivery
    assert isinstance(promoted, ModelPromotedEvent)
    assert calls == [
        "genesys-nlu.prepare v1",
        "genesys-nlu.activate v1",
        "genesys-nlu.prepare v1 (resumed)",  # the upload is not repeated
        "genesys-nlu.activate v1",
    ]
    assert champion(client, key) == "1"


async def test_a_rollback_restores_the_previous_champion_once_and_for_good(
    mlflow_uri: str, model
) -> None:
    key, client = model
    p = promoter(mlflow_uri, lambda name, key: PredictorTarget(), ["predictor"])
    await p.promote(evaluated(key, 1))
    await p.promote(evaluated(key, 2))

    request = rollback(key)
    rolled, audit, _ = split(await p.rollback(request))
    assert isinstance(rolled, ModelRolledBackEvent)
    assert (rolled.payload.from_version, rolled.payload.to_version) == (2, 1)
    assert audit.payload.action == "model.rolled_back"
    assert champion(client, key) == "1"
    assert status(client, key, 2) == "rolled_back"

    again = await p.rollback(request)  # redelivered: the same event, nothing moves
    assert [e.event_id for e in again] == [rolled.event_id]
    assert champion(client, key) == "1"

    [skipped] = await p.promote(evaluated(key, 2))  # never promoted again on its own
    assert skipped.payload.action == "promotion.skipped"
    assert champion(client, key) == "1"


async def test_a_rollback_with_nowhere_to_go_is_refused(mlflow_uri: str, model) -> None:
    key, _ = model
    p = promoter(mlflow_uri, lambda name, key: PredictorTarget(), ["predictor"])
    with pytest.raises(Exception, match="no champion"):
        await p.rollback(rollback(key))
    await p.promote(evaluated(key, 1))
    with pytest.raises(Exception, match="nothing to roll back"):
        await p.rollback(rollback(key))
    with pytest.raises(Exception, match="already live"):
        await p.rollback(rollback(key, to=1))
