"""One request, two trainers: exactly one MLflow version, and every `model.trained` names it.

- two trainers train the same request at once (what a rebalance can cause): the one that
  registers second finds the first one's version right before registering and publishes
  that instead (real MLflow);
- two real trainer consumers in one group on a real broker, the second joining while the
  first trains: a rebalance while a training runs. The revoke waits for the training
  (`rebalance_timeout_ms`), and if a member was thrown out anyway the re-check above keeps
  it to one version.

The training is a stub family whose fit waits on a flag the test sets: no model is fitted,
but everything the trainer does in MLflow (run, artifacts, model, version, alias) is real.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.pyfunc import PythonModel

from driftloop_common.contracts.events import (
    Event,
    ModelKey,
    ModelTrainedEvent,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.families.base import FittedModel, SplitData
from driftloop_common.ml.modeling.splits import SPLITS
from driftloop_common.runtime.kafka import make_consumer, make_producer
from driftloop_common.runtime.loop import RetryPolicy, ServiceLoop
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import KafkaSettings, MlflowSettings
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag
from driftloop_trainer import training
from driftloop_trainer.service import TrainerMetrics, TrainerService
from driftloop_trainer.training import Trainer, TrainerConfig
from tests.integration.helpers import events_until, make_topics, produce, running, wait_for

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 10  # aiokafka's default, which make_consumer keeps


class Constant(PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return pd.DataFrame({"score": np.zeros(len(model_input))})


class StubFamily:
    """Three rows per split; `fit` calls `during_fit` first (a test's pause or side effect)."""

    name = "stub-regressor"
    encoder_id = "none"

    def __init__(self, during_fit: Callable[[], None] = lambda: None) -> None:
        self.during_fit = during_fit

    def load(self, key: ModelKey, windows: dict) -> SplitData:
        return SplitData({s: None for s in SPLITS}, {s: np.zeros(3) for s in SPLITS}, False)

    def fit(self, data: SplitData, *, seed: int, progress: Any) -> FittedModel:
        from mlflow.models import infer_signature

        self.during_fit()
        example = pd.DataFrame({"x": [1.0, 2.0]})
        return FittedModel(
            pyfunc=Constant(),
            labels=frozenset({"x"}),
            params={},
            metrics={"test_rmse": 0.0},
            counts=data.counts(),
            signature=infer_signature(example, Constant().predict(None, example)),
            input_example=example,
        )

    def write_artifacts(self, fitted: FittedModel, folder: Path) -> None:
        pass

    def report(self, *args: Any) -> str:
        return "stub\n"

    def pip_requirements(self) -> list[str]:
        return ["mlflow"]


class Gate:
    """A fit that says it started and waits until the test lets it finish."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.release.wait(timeout=240), "the test never let the training finish"


def config(mlflow_uri: str, member: str, tmp_path: Path) -> TrainerConfig:
    return TrainerConfig(
        mlflow=MlflowSettings(tracking_uri=mlflow_uri),
        store_url=str(tmp_path / member),  # tells the members' families apart
        min_train_rows=1,
        min_validation_rows=1,
        min_test_rows=1,
    )


def use_families(monkeypatch: pytest.MonkeyPatch, families: dict[str, StubFamily]) -> None:
    monkeypatch.setattr(training, "family_for", lambda kind, store, options: families[store])


def make_request(language: str) -> TrainingRequestedEvent:
    return TrainingRequestedEvent(
        producer="test",
        model_key=f"intent/{language}",
        payload=TrainingRequested(reason=TrainingReason.MANUAL, requested_by="test"),
    )


def test_a_request_trained_twice_at_once_registers_one_version(
    mlflow_uri: str, fresh_language: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = make_request(fresh_language)
    first, second = (Trainer(config(mlflow_uri, m, tmp_path)) for m in ("a", "b"))
    results: dict[str, Event] = {}

    def second_trains_meanwhile() -> None:
        # While `first` fits, `second` trains the same request to the end (a rebalance
        # handed it over): `first` checked for a version before training and found none.
        results["second"] = second.train(request)

    use_families(
        monkeypatch,
        {
            first.config.store_url: StubFamily(second_trains_meanwhile),
            second.config.store_url: StubFamily(),
        },
    )
    results["first"] = first.train(request)

    client = MlflowClient(mlflow_uri)
    name = request.model_key.registered_model
    versions = registry.versions(client, name)
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    version = versions[0]
    for event in results.values():
        assert isinstance(event, ModelTrainedEvent), event
        assert event.payload.version == int(version.version)
        assert event.payload.run_id == version.run_id
    assert results["first"].event_id == results["second"].event_id
    assert client.get_model_version_by_alias(name, registry.CHALLENGER).version == version.version
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    dropped = client.search_runs([experiment.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [run.data.tags[Tag.DUPLICATE_OF] for run in dropped] == [version.version]
    live = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in live] == [version.run_id]


def trainer_loop(
    bootstrap: str, topic: str, out_topic: str, group: str, trainer: Trainer, member: str
) -> ServiceLoop[TrainingRequestedEvent]:
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    metrics = LoopMetrics(f"trainer_{member}")
    return ServiceLoop(
        service="trainer",
        topics=[topic],
        decode=lambda r: decode_event(r.value or b"", expected=(TrainingRequestedEvent,)),
        handle=TrainerService(trainer, TrainerMetrics(metrics)).handle,
        consumer=make_consumer(
            settings, group_id=group, client_id=f"trainer-{member}", max_poll_interval_ms=240_000
        ),
        producer=make_producer(settings, client_id=f"trainer-{member}"),
        metrics=metrics,
        retry=RetryPolicy(attempts=3, initial_backoff_s=0.2, max_backoff_s=1),
        poll_timeout_ms=200,
        route=lambda event: out_topic,
        busy_heartbeat_s=1,
    )


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    found = offsets.get(tp)
    return found.offset if found is not None else -1


async def group_state(bootstrap: str, group: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _error, _group, state, *_ = response.groups[0]
    return state


async def everything_on(bootstrap: str, topic: str) -> list[Event]:
    """Every event on `topic` up to its end now (one partition)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        events: list[Event] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                events.extend(decode_event(r.value or b"") for r in records)
        return events
    finally:
        await consumer.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_rebalance_while_a_member_trains_ends_in_one_version(
    kafka_bootstrap: str,
    mlflow_uri: str,
    fresh_name: Callable[[str], str],
    fresh_language: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic, out_topic = fresh_name("train-req"), fresh_name("trained")
    group = fresh_name("trainers")
    await make_topics(kafka_bootstrap, topic, out_topic, partitions=1)
    gates = {"a": Gate(), "b": Gate()}
    trainers = {m: Trainer(config(mlflow_uri, m, tmp_path)) for m in gates}
    use_families(monkeypatch, {trainers[m].config.store_url: StubFamily(gates[m]) for m in gates})
    a, b = (trainer_loop(kafka_bootstrap, topic, out_topic, group, trainers[m], m) for m in gates)
    request = make_request(fresh_language)

    async with running(a):
        await wait_for(lambda: bool(a.state.assignment), 60, "member a's assignment")
        await produce(kafka_bootstrap, topic, [request])
        await wait_for(gates["a"].entered.is_set, 60, "member a to start training")
        async with running(b):  # b joins the group: a rebalance while a trains
            # a trains on for longer than the session timeout, which is when a member whose
            # revoke does not answer is thrown out; if that happens b gets the request and
            # trains it too (which ends the wait early).
            held = time.monotonic()
            while not gates["b"].entered.is_set() and time.monotonic() - held < 2 * (
                SESSION_TIMEOUT_S + 1
            ):
                await asyncio.sleep(0.2)
            state_while_a_trained = await group_state(kafka_bootstrap, group)
            b_trained_too = gates["b"].entered.is_set()
            gates["a"].release.set()
            await events_until(kafka_bootstrap, out_topic, lambda found: bool(found), timeout_s=60)
            gates["b"].release.set()
            tp = TopicPartition(topic, 0)
            async with asyncio.timeout(120):  # a hang fails the test, never a speed check
                while await committed(kafka_bootstrap, group, tp) < 1:
                    await asyncio.sleep(0.3)
            await wait_for(
                lambda: a.state.assignment | b.state.assignment == {tp}, 60, "the group to settle"
            )

    client = MlflowClient(mlflow_uri)
    versions = registry.versions(client, request.model_key.registered_model)
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    trained = await everything_on(kafka_bootstrap, out_topic)
    assert trained, "no model.trained published"
    assert {e.event_type for e in trained} == {"model.trained"}
    assert {e.payload.version for e in trained} == {int(versions[0].version)}
    assert {e.event_id for e in trained} == {trained[0].event_id}
    assert uuid.UUID(str(trained[0].payload.request_event_id)) == request.event_id
    # The first line of defence: the revoke waited for the training (rebalance_timeout_ms =
    # max_poll_interval_ms), so the group was still rebalancing when a finished, and b never
    # got the request while a trained it.
    assert state_while_a_trained == "PreparingRebalance", (
        f"the group was {state_while_a_trained} while a still trained: a was thrown out"
    )
    assert not b_trained_too, "b trained the request too: a was thrown out while it trained"
