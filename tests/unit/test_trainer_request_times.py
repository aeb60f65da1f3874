"""A `training.requested` whose time no split window fits (year 1, year 9999) is refused
with `invalid_as_of` and dead-lettered, instead of failing the same way on every delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    TrainingFailedEvent,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
)
from driftloop_common.runtime.loop import RetryPolicy, ServiceLoop
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_trainer.service import TrainerMetrics, TrainerService
from driftloop_trainer.training import Trainer, TrainerConfig
from tests.unit.fakes import FakeConsumer, FakeProducer, FakeRecord

TOPIC = "training.requested"
YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)
YEAR_9999 = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)


class EmptyRegistry:
    """What the trainer asks MLflow before training, answered as for a model never trained."""

    def search_model_versions(self, filter_string: str) -> list:
        return []

    def get_experiment_by_name(self, name: str) -> None:
        return None


def request(*, as_of: datetime | None = None, at: datetime | None = None) -> TrainingRequestedEvent:
    return TrainingRequestedEvent(
        producer="test",
        model_key="intent/en-us",
        occurred_at=at or datetime.now(UTC),
        payload=TrainingRequested(reason=TrainingReason.MANUAL, requested_by="t", as_of=as_of),
    )


def trainer(store: Path) -> Trainer:
    made = Trainer(
        TrainerConfig(
            mlflow=MlflowSettings(tracking_uri="http://127.0.0.1:9"), store_url=str(store)
        )
    )
    made.client = EmptyRegistry()  # type: ignore[assignment]
    return made


BAD = {
    "as_of in year 1": request(as_of=YEAR_1),
    "as_of in year 9999": request(as_of=YEAR_9999),
    "made in year 1": request(at=YEAR_1),
    "made in year 9999": request(at=YEAR_9999),
}


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_the_trainer_refuses_a_request_time_no_window_fits(bad, tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as refused:
        trainer(tmp_path).train(bad)
    assert refused.value.code == "invalid_as_of"
    assert "as_of" in str(refused.value) or "occurred_at" in str(refused.value)


def test_such_requests_reach_the_dlq_and_the_next_request_is_handled(tmp_path: Path) -> None:
    import asyncio

    from driftloop_trainer.service import decoder

    made = trainer(tmp_path)
    good = request(as_of=datetime.now(UTC) - timedelta(days=1))
    records = [
        FakeRecord(TOPIC, 0, offset, event.to_bytes(), key=event.key)
        for offset, event in enumerate([*BAD.values(), good])
    ]
    journal: list[Any] = []
    consumer, producer = FakeConsumer(journal, [records]), FakeProducer(journal)
    loop = ServiceLoop(
        service="trainer",
        topics=[TOPIC],
        decode=decoder(made.config),
        handle=TrainerService(made, TrainerMetrics(LoopMetrics("trainer-t"))).handle,
        consumer=consumer,
        producer=producer,
        retry=RetryPolicy(attempts=2, initial_backoff_s=0.001, max_backoff_s=0.001),
    )
    consumer.on_empty = loop.stop
    asyncio.run(loop.run())

    dead = [dict(headers) for topic, _, _, headers in producer.sent if topic == f"{TOPIC}.dlq"]
    assert [h["dlq.reason_code"] for h in dead] == [b"invalid_as_of"] * len(BAD)
    assert [h["dlq.source_offset"] for h in dead] == [b"0", b"1", b"2", b"3"]
    published = [value for topic, value, _, _ in producer.sent if topic == "training.failed"]
    assert len(published) == 1  # the good request: an empty store cannot make a model
    assert TrainingFailedEvent.model_validate_json(published[0]).payload.request_event_id == (
        good.event_id
    )
    assert consumer.committed[TopicPartition(TOPIC, 0)] == len(records)


def test_long_handlers_note_each_record_in_flight_by_default() -> None:
    from driftloop_common.runtime.settings import ServiceSettings
    from driftloop_evaluator.settings import EvaluatorSettings
    from driftloop_trainer.settings import TrainerSettings

    assert TrainerSettings().track_in_flight and EvaluatorSettings().track_in_flight
    assert not ServiceSettings().track_in_flight  # a commit per record: not for the stream
