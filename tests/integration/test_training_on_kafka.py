"""Trainer and evaluator on a real broker and a real MLflow server.

- a retraining requested with the CLI ends in a version aliased `challenger` with its
  artifacts, and a `model.evaluated`;
- a redelivered `training.requested` creates one version, not two;
- the tabular family goes through the same services;
- `driftloop train` registers a version; a challenger trained on shuffled labels is
  rejected by the evaluator with the failing rules named;
- a `model.trained` naming a version that was deleted is dead-lettered by the evaluator
  (`version_not_found`), which carries on.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from mlflow import MlflowClient

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Event,
    ModelEvaluatedEvent,
    ModelKey,
    ModelTrained,
    ModelTrainedEvent,
    TrainingRequested,
    TrainingRequestedEvent,
)
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_common.storage import registry
from driftloop_common.storage.features import FeatureTableStore
from driftloop_drift_monitor.baselines import MlflowBaselineSource
from driftloop_evaluator.evaluation import Evaluator, EvaluatorConfig
from driftloop_synthetic.leads import LeadConfig, generate_leads
from driftloop_trainer.training import Trainer, TrainerConfig
from tests.integration.helpers import ROOT, ServiceProcess, events_until, make_topics, produce
from tests.integration.history import SyntheticHistory

pytestmark = pytest.mark.integration
TIMEOUT_S = 240


class Services:
    def __init__(self, trainer: ServiceProcess, evaluator: ServiceProcess, store: str) -> None:
        self.trainer, self.evaluator, self.store_url = trainer, evaluator, store

    def logs(self) -> str:
        return f"trainer:\n{self.trainer.log_tail()}\nevaluator:\n{self.evaluator.log_tail()}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    """One trainer and one evaluator for this module; they start at the newest offsets, so
    events other tests left on the broker are not theirs to handle."""
    tmp_path = tmp_path_factory.mktemp("training")
    await make_topics(
        kafka_bootstrap, topics.TRAINING_REQUESTED, topics.MODEL_TRAINED, topics.MODEL_EVALUATED
    )
    run = uuid.uuid4().hex[:8]
    env = {
        "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLOOP_MLFLOW__TRACKING_URI": mlflow_uri,
        "DRIFTLOOP_STORE_URL": str(tmp_path / "store"),
        "DRIFTLOOP_AUTO_OFFSET_RESET": "latest",
    }
    trainer = ServiceProcess(
        "driftloop_trainer",
        {**env, "DRIFTLOOP_SERVICE_NAME": f"trainer-{run}"},
        tmp_path / "trainer.log",
    )
    evaluator = ServiceProcess(
        "driftloop_evaluator",
        {**env, "DRIFTLOOP_SERVICE_NAME": f"evaluator-{run}"},
        tmp_path / "evaluator.log",
    )
    await trainer.start()
    await evaluator.start()
    try:
        yield Services(trainer, evaluator, env["DRIFTLOOP_STORE_URL"])
    finally:
        await trainer.stop()
        await evaluator.stop()


def of_key(language: str):
    return lambda event: event.model_key.language == language


async def outcome(bootstrap: str, language: str, services: Services) -> tuple[Event, Event]:
    (trained,) = await events_until(
        bootstrap,
        topics.MODEL_TRAINED,
        lambda found: len(found) >= 1,
        keep=of_key(language),
        timeout_s=TIMEOUT_S,
        on_timeout=services.logs,
    )
    (evaluated,) = await events_until(
        bootstrap,
        topics.MODEL_EVALUATED,
        lambda found: len(found) >= 1,
        keep=of_key(language),
        timeout_s=TIMEOUT_S,
        on_timeout=services.logs,
    )
    return trained, evaluated


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path or None):
        found.add(item.path)
        if item.is_dir:
            found |= artifact_paths(client, run_id, item.path)
    return found


@pytest.mark.asyncio(loop_scope="session")
async def test_cli_request_ends_in_a_challenger_with_artifacts_and_an_evaluation(
    kafka_bootstrap: str,
    mlflow_uri: str,
    services: Services,
    history: SyntheticHistory,
    fresh_language: str,
) -> None:
    history.write(services.store_url, fresh_language)
    cli = subprocess.run(
        [
            *(sys.executable, "-m", "driftloop_cli", "publish", "retrain", "-m", "intent"),
            *("-l", fresh_language, "--reason", "integration test", "-b", kafka_bootstrap),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    request_id = cli.stdout.strip()

    trained, evaluated = await outcome(kafka_bootstrap, fresh_language, services)
    assert isinstance(trained, ModelTrainedEvent) and isinstance(evaluated, ModelEvaluatedEvent)
    assert str(trained.payload.request_event_id) == request_id
    name = trained.payload.registered_model
    client = MlflowClient(mlflow_uri)
    challenger = client.get_model_version_by_alias(name, registry.CHALLENGER)
    assert int(challenger.version) == trained.payload.version
    assert challenger.tags[registry.Tag.SEMVER] == trained.payload.semver == "1.0.0"
    assert challenger.tags[registry.Tag.REQUEST] == request_id
    artifacts = artifact_paths(client, trained.payload.run_id)
    for expected in (
        "labels.json",
        "report.md",
        "confusion_matrix.png",
        "drift_baseline",
        "evaluation/evaluation.md",
        "evaluation/per_class_f1.png",
    ):
        assert expected in artifacts, sorted(artifacts)
    run = client.get_run(trained.payload.run_id)
    assert int(run.data.params["train_rows"]) > 0
    assert run.data.tags[registry.Tag.CORRELATION] == str(trained.correlation_id)
    assert evaluated.correlation_id == trained.correlation_id
    assert evaluated.payload.version == trained.payload.version
    assert evaluated.payload.passed, evaluated.payload.reasons  # no champion: the floor only
    assert evaluated.payload.metrics["shadow_rows"] > 0
    assert 0 < evaluated.payload.metrics["confidence"] <= 1
    version = client.get_model_version(name, challenger.version)
    assert version.tags[registry.Tag.EVALUATION] == "passed"

    # Redelivery: the same request again publishes the same model.trained, no new version.
    (original,) = await events_until(
        kafka_bootstrap,
        topics.TRAINING_REQUESTED,
        lambda found: len(found) >= 1,
        keep=lambda e: str(e.event_id) == request_id,
        timeout_s=30,
    )
    await produce(kafka_bootstrap, topics.TRAINING_REQUESTED, [original])
    again = await events_until(
        kafka_bootstrap,
        topics.MODEL_TRAINED,
        lambda found: len(found) >= 2,
        keep=of_key(fresh_language),
        timeout_s=TIMEOUT_S,
        on_timeout=services.logs,
    )
    assert {e.event_id for e in again} == {trained.event_id}
    assert [v.version for v in registry.versions(client, name)] == [challenger.version]


@pytest.mark.asyncio(loop_scope="session")
async def test_the_tabular_family_goes_through_the_same_services(
    kafka_bootstrap: str, mlflow_uri: str, services: Services, fresh_language: str
) -> None:
    leads = generate_leads(
        LeadConfig(
            count=3000,
            days=110,
            end=datetime.now(UTC).replace(minute=0, second=0, microsecond=0),
            languages={fresh_language: 1.0},
        )
    )
    FeatureTableStore(services.store_url, table="leads").append(leads)
    request = TrainingRequestedEvent(
        producer="test",
        model_key=f"lead-score/{fresh_language}",
        payload=TrainingRequested(reason="manual", requested_by="test"),
    )
    await produce(kafka_bootstrap, topics.TRAINING_REQUESTED, [request])
    trained, evaluated = await outcome(kafka_bootstrap, fresh_language, services)
    assert isinstance(trained, ModelTrainedEvent), trained
    assert set(trained.payload.labels) >= {"pages_visited", "campaign_source"}
    assert trained.payload.metrics["test_r2"] > 0
    assert evaluated.payload.passed, evaluated.payload.reasons
    assert "challenger_rmse" in evaluated.payload.metrics
    client = MlflowClient(mlflow_uri)
    artifacts = artifact_paths(client, trained.payload.run_id)
    assert {"feature_importances.json", "report.md"} <= artifacts


def test_cli_training_then_a_worse_challenger_is_rejected_with_the_rule_named(
    mlflow_uri: str, history: SyntheticHistory, fresh_language: str, tmp_path: Path
) -> None:
    good, shuffled = str(tmp_path / "good"), str(tmp_path / "shuffled")
    history.write(good, fresh_language)
    history.write(shuffled, fresh_language, shuffle_labels=True)
    cli = subprocess.run(
        [
            *(sys.executable, "-m", "driftloop_cli", "train", "-m", "intent"),
            *("-l", fresh_language, "--store", good, "--mlflow", mlflow_uri),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert "test_macro_f1" in cli.stderr  # the final metrics table
    name = f"intent-{fresh_language}"
    client = MlflowClient(mlflow_uri)
    (first,) = registry.versions(client, name)
    client.set_registered_model_alias(name, registry.CHAMPION, first.version)
    # The drift-monitor now compares against this champion's training data.
    baseline = MlflowBaselineSource(mlflow_uri).load(ModelKey.parse(f"intent/{fresh_language}"))
    assert baseline is not None and baseline.source == f"{name} v{first.version}"
    assert baseline.label_set == frozenset(registry.labels_of(first))

    worse = Trainer(
        TrainerConfig(mlflow=MlflowSettings(tracking_uri=mlflow_uri), store_url=shuffled)
    ).train(
        TrainingRequestedEvent(
            producer="test",
            model_key=f"intent/{fresh_language}",
            payload=TrainingRequested(reason="manual", requested_by="test"),
        )
    )
    assert isinstance(worse, ModelTrainedEvent), worse
    assert worse.payload.semver == "1.0.1"  # same labels: a patch
    verdict = Evaluator(
        EvaluatorConfig(mlflow=MlflowSettings(tracking_uri=mlflow_uri), store_url=good)
    ).evaluate(worse)
    assert not verdict.payload.passed
    failed = {reason.split(":", 1)[0] for reason in verdict.payload.reasons}
    assert {"improvement", "class_drop"} <= failed
    assert verdict.payload.champion_version == int(first.version)
    m = verdict.payload.metrics
    assert m["champion_macro_f1"] > m["challenger_macro_f1"] + 0.03
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == first.version


async def dead_letter_of(
    bootstrap: str, topic: str, event: Event, service: ServiceProcess, timeout_s: float
) -> dict:
    """The headers of `event`'s dead letter on `topic` (read from the beginning), while
    `service` runs."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert service.proc is not None and service.proc.poll() is None, (
                f"{service.module} exited:\n{service.log_tail()}"
            )
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if str(event.event_id).encode() in (record.value or b""):
                        return {k: v.decode() for k, v in record.headers}
        raise AssertionError(f"no dead letter of {event.event_id} on {topic} in {timeout_s} s")
    finally:
        await consumer.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_model_trained_naming_a_deleted_version_is_dead_lettered(
    kafka_bootstrap: str, mlflow_uri: str, services: Services, fresh_language: str
) -> None:
    name = f"intent-{fresh_language}"
    client = MlflowClient(mlflow_uri)
    client.create_registered_model(name)
    version = client.create_model_version(name, source="s3://driftloop-test/none")
    client.delete_model_version(name, version.version)
    event = ModelTrainedEvent(
        producer="test",
        model_key=f"intent/{fresh_language}",
        payload=ModelTrained(
            request_event_id=uuid.uuid4(),
            registered_model=name,
            version=int(version.version),
            semver="1.0.0",
            run_id="gone",
        ),
    )
    await produce(kafka_bootstrap, topics.MODEL_TRAINED, [event])
    headers = await dead_letter_of(
        kafka_bootstrap, topics.dlq(topics.MODEL_TRAINED), event, services.evaluator, TIMEOUT_S
    )
    assert headers["dlq.reason_code"] == "version_not_found", headers
    assert headers["dlq.service"].startswith("evaluator")
    assert services.evaluator.proc is not None and services.evaluator.proc.poll() is None
