"""Staged promotions without MLflow or Kafka: the stage order, canary stickiness and share,
the predictor serving a canary and scoring a shadow, and the watcher judging a stage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

from driftloop_common.contracts.events import (
    ModelPromoted,
    ModelPromotedEvent,
    ModelRolledBack,
    ModelRolledBackEvent,
    Prediction,
    PredictionEvent,
)
from driftloop_predictor.models import StagedVersion, in_canary
from driftloop_promoter.rollout import RolloutOptions, StagedFrom
from driftloop_rollback_watcher.watch import RollbackWatcher, WatchConfig
from tests.unit.test_predictor import (
    AUTH,
    NAME,
    FakeLoader,
    ProbaModel,
    http,
    infer_body,
    promoted,
    service,
)
from tests.unit.test_rollback_watcher import EN, T0
from tests.unit.test_rollback_watcher import promoted as watcher_promoted

# ------------------------------------------------------------------ stage order


@pytest.mark.parametrize(
    ("shadow_s", "canary_s", "order"),
    [
        (0, 0, ["champion"]),
        (60, 0, ["shadow", "champion"]),
        (0, 60, ["canary", "champion"]),
        (60, 60, ["shadow", "canary", "champion"]),
    ],
)
def test_stages_of_length_zero_are_skipped(shadow_s: float, canary_s: float, order: list) -> None:
    rollout = RolloutOptions(shadow_s=shadow_s, canary_s=canary_s)
    walked = [rollout.first()]
    while walked[-1] != "champion":
        walked.append(rollout.after(walked[-1]))
    assert walked == order
    assert rollout.staged == (order != ["champion"])


def test_the_evaluation_a_stage_came_from_survives_its_tag() -> None:
    from driftloop_common.contracts.events import ModelEvaluated, ModelEvaluatedEvent

    event = ModelEvaluatedEvent(
        producer="evaluator",
        model_key=EN,
        payload=ModelEvaluated(
            registered_model="intent-en-us",
            version=3,
            passed=True,
            metrics={"confidence": 0.8, "challenger_accuracy": 0.9, "challenger_f1": 0.7},
        ),
    )
    again = StagedFrom.from_tag(StagedFrom.of(event).to_tag()).evaluation("intent-en-us", 3, "p")
    assert (again.event_id, again.correlation_id, again.model_key) == (
        event.event_id,
        event.correlation_id,
        event.model_key,
    )
    assert again.payload.metrics == {"confidence": 0.8, "challenger_accuracy": 0.9}
    assert again.payload.passed and again.payload.version == 3


# ------------------------------------------------------------------ canary share


def test_a_conversation_keeps_its_side_and_the_share_is_the_configured_one() -> None:
    ids = [f"conv-{i}" for i in range(20_000)]
    inside = [c for c in ids if in_canary(NAME, c, 10.0)]
    assert 0.085 < len(inside) / len(ids) < 0.115
    assert all(in_canary(NAME, c, 10.0) for c in inside[:500])  # asked again: same answer
    assert set(inside) <= {c for c in ids if in_canary(NAME, c, 30.0)}  # a larger share grows
    assert [c for c in ids if in_canary("other-model", c, 10.0)] != inside  # per model


# ------------------------------------------------------------------ predictor


def bot(session: str) -> dict[str, Any]:
    return {"botSessionId": session, "inputMessage": {"text": "hello"}}


async def test_a_canary_answers_its_share_of_conversations_sticky_and_names_its_stage() -> None:
    loader = FakeLoader(champion=1)
    loader.stages[NAME] = StagedVersion("canary", 2, 25.0)
    svc = service(loader)
    await svc.on_start()
    sessions = [f"s-{i}" for i in range(80)]
    async with http(svc) as client:
        for _ in range(2):  # each conversation asks twice
            for s in sessions:
                answer = await client.post(
                    f"/genesys/bot-connector/{NAME}", json=bot(s), headers=AUTH
                )
                expected = 2 if in_canary(NAME, s, 25.0) else 1
                assert answer.json()["parameters"]["model_version"] == str(expected)
    events = [e for e in await svc.flush() if isinstance(e, PredictionEvent)]
    by_stage = {(e.payload.version, e.payload.stage) for e in events}
    assert by_stage == {(1, "champion"), (2, "canary")}
    canary = [e for e in events if e.payload.stage == "canary"]
    assert 0 < len(canary) < len(events)
    await svc.models.aclose()


async def test_a_shadow_scores_every_request_and_never_answers() -> None:
    loader = FakeLoader(champion=1)
    loader.stages[NAME] = StagedVersion("shadow", 2)
    svc = service(loader)
    await svc.on_start()
    async with http(svc) as client:
        for s in ("a", "b", "c"):
            answer = await client.post(f"/genesys/bot-connector/{NAME}", json=bot(s), headers=AUTH)
            assert answer.json()["parameters"]["model_version"] == "1"
    await svc.models.shadows_scored()
    assert sum(loader.models[2].sizes) == 3
    events = [e for e in await svc.flush() if isinstance(e, PredictionEvent)]
    shadow = [e for e in events if e.payload.stage == "shadow"]
    assert len(shadow) == 3 and {e.payload.version for e in shadow} == {2}
    assert all(e.payload.conversation_id is None for e in shadow)
    exposition = generate_latest(svc.metrics.registry).decode()
    # The fake labels by version ("v1:…" vs "v2:…"): the shadow never agrees.
    assert 'shadow_predictions_total{model_key="intent/en-us",result="disagree"} 3.0' in exposition
    assert 'staged_version{model_key="intent/en-us",stage="shadow"} 2.0' in exposition
    await svc.models.aclose()


async def test_a_stage_that_ends_is_dropped_and_one_that_moves_on_is_kept() -> None:
    loader = FakeLoader(champion=1)
    loader.stages[NAME] = StagedVersion("shadow", 2)
    svc = service(loader)
    await svc.on_start()
    assert svc.models.staged(NAME).stage == "shadow"  # type: ignore[union-attr]
    loader.stages[NAME] = StagedVersion("canary", 2, 10.0)
    await svc.handle(promoted(2))
    staged = svc.models.staged(NAME)
    assert staged is not None and (staged.stage, staged.share_percent) == ("canary", 10.0)
    assert loader.loads.count(2) == 1  # the stage moved; the version was not loaded again
    del loader.stages[NAME]
    loader.champions[NAME] = 2
    await svc.handle(promoted(2))
    assert svc.models.staged(NAME) is None and svc.models.live(NAME).version == 2  # type: ignore[union-attr]
    await svc.models.aclose()


# ------------------------------------------------------------------ watcher


def staged_promoted(version: int, stage: str, confidence: float = 0.9) -> ModelPromotedEvent:
    return ModelPromotedEvent(
        producer="promoter",
        model_key=EN,
        occurred_at=T0 + timedelta(minutes=1),
        payload=ModelPromoted(
            registered_model="intent-en-us",
            version=version,
            targets=["predictor"],
            stage=stage,  # type: ignore[arg-type]
            confidence_at_promotion=confidence,
        ),
    )


def predicted(version: int, confidence: float, i: int, stage: str) -> PredictionEvent:
    return PredictionEvent(
        producer="predictor",
        model_key=EN,
        occurred_at=T0 + timedelta(minutes=2, seconds=i),
        payload=Prediction(
            version=version,
            label="billing",
            confidence=confidence,
            served_by="t",
            stage=stage,  # type: ignore[arg-type]
        ),
    )


@pytest.mark.parametrize("stage", ["shadow", "canary"])
def test_a_staged_version_whose_confidence_falls_is_named_and_the_champion_kept(stage: str) -> None:
    watcher = RollbackWatcher(WatchConfig(min_predictions=50))
    watcher.apply(watcher_promoted(1, confidence=0.9))
    watcher.apply(staged_promoted(2, stage, confidence=0.9))
    for i in range(60):  # the champion stays confident
        assert watcher.observe(predicted(1, 0.9, i, "champion")) == []
    requests = [r for i in range(60) for r in watcher.observe(predicted(2, 0.5, i, stage))]
    assert len(requests) == 1
    assert requests[0].payload.from_version == 2 and stage in requests[0].payload.reason
    assert watcher.keys[EN].version == 1  # the champion's window is its own
    assert watcher.last_checks[EN].mean == pytest.approx(0.9)


def test_a_stage_ended_by_a_rollback_or_a_promotion_loses_its_window() -> None:
    watcher = RollbackWatcher(WatchConfig(min_predictions=50))
    watcher.apply(watcher_promoted(1))
    watcher.apply(staged_promoted(2, "canary"))
    assert watcher.staged[EN].version == 2
    ended = ModelRolledBackEvent(
        producer="promoter",
        model_key=EN,
        occurred_at=T0 + timedelta(minutes=5),
        payload=ModelRolledBack(
            registered_model="intent-en-us",
            from_version=2,
            to_version=1,
            reason="test",
            stage="canary",
        ),
    )
    assert watcher.apply(ended) is False  # the champion did not change
    assert EN not in watcher.staged and watcher.keys[EN].version == 1
    assert watcher.observe(predicted(2, 0.5, 0, "canary")) == []
    assert watcher.ignored[(EN, "other_version")] == 1

    watcher.apply(staged_promoted(3, "canary"))
    watcher.apply(watcher_promoted(3, at=T0 + timedelta(minutes=9)))
    assert EN not in watcher.staged and watcher.keys[EN].version == 3


# ------------------------------------------------------------------ abstain


class FlooredModel(ProbaModel):
    """A version whose training chose 0.65 as its abstain floor ("stop" scores 0.6)."""

    abstain_floor = 0.65


@pytest.mark.parametrize("on", [True, False])
async def test_below_its_floor_an_intent_model_abstains_only_where_abstain_is_on(on: bool) -> None:
    loader = FakeLoader()
    loader.models[1] = FlooredModel()  # type: ignore[assignment]
    svc = service(loader, abstain=["intent/en-us"] if on else [])
    await svc.on_start()
    async with http(svc) as client:
        body = {
            "inputs": [
                {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["bill", "stop"]}
            ]
        }
        outputs = (await client.post(f"/v2/models/{NAME}/infer", json=body, headers=AUTH)).json()
        stop = {"botSessionId": "s", "inputMessage": {"text": "stop"}}
        bot = (await client.post(f"/genesys/bot-connector/{NAME}", json=stop, headers=AUTH)).json()
    labels, confidences = outputs["outputs"][0]["data"], outputs["outputs"][1]["data"]
    assert labels == (["billing", "out_of_scope"] if on else ["billing", "cancel"])
    assert confidences == pytest.approx([0.7, 0.6])  # the model's own confidence, kept
    if on:
        assert bot["botState"] == "Failed" and bot["errorInfo"]["errorCode"] == "out_of_scope"
    else:
        assert (bot["botState"], bot["intent"]) == ("Complete", "cancel")
    await svc.models.aclose()


async def test_a_version_without_a_floor_never_abstains() -> None:
    loader = FakeLoader()
    loader.models[1] = ProbaModel()  # type: ignore[assignment]
    svc = service(loader, abstain=["intent/en-us"])
    await svc.on_start()
    async with http(svc) as client:
        body = infer_body(["stop"])
        outputs = (await client.post(f"/v2/models/{NAME}/infer", json=body, headers=AUTH)).json()
    assert outputs["outputs"][0]["data"] == ["cancel"]
    await svc.models.aclose()


def test_people_read_which_stage_an_event_is_about() -> None:
    from driftloop_common.contracts.describe import describe

    canary = staged_promoted(2, "canary")
    canary = canary.model_copy(
        update={"payload": canary.payload.model_copy(update={"share_percent": 15.0})}
    )
    assert "canary for 15 % of conversations" in describe(canary)
    assert "canary for a share of" in describe(staged_promoted(2, "canary"))  # share unknown
    assert "never answered" in describe(staged_promoted(2, "shadow"))
    ended = ModelRolledBackEvent(
        producer="promoter",
        model_key=EN,
        payload=ModelRolledBack(
            registered_model="intent-en-us",
            from_version=2,
            to_version=1,
            reason="r",
            stage="shadow",
        ),
    )
    assert "the shadow stage of v2 ended, v1 stays" in describe(ended)
