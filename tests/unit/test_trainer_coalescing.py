"""The trainer's handler: redeliveries publish the same version again, requests made while
a training ran collapse into one follow-up, and trainings of other keys are independent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from driftloop_common.contracts.events import (
    Event,
    ModelTrained,
    ModelTrainedEvent,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
)
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_trainer.service import TrainerMetrics, TrainerService

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)


class FakeTrainer:
    """Trainings 'start' at a clock that the test advances; versions by request id."""

    def __init__(self) -> None:
        self.clock = T0
        self.started: dict[str, datetime] = {}
        self.versions: dict[str, ModelTrainedEvent] = {}
        self.trained: list[str] = []

    def existing(self, request: TrainingRequestedEvent) -> Event | None:
        return self.versions.get(str(request.event_id))

    def last_started(self, request: TrainingRequestedEvent) -> datetime | None:
        return self.started.get(str(request.model_key))

    def train(self, request: TrainingRequestedEvent) -> Event:
        self.started[str(request.model_key)] = self.clock
        self.trained.append(request.payload.note or "")
        self.clock += timedelta(minutes=10)  # the training takes ten minutes
        event = request.follow_up(
            ModelTrainedEvent,
            producer="trainer",
            payload=ModelTrained(
                request_event_id=request.event_id,
                registered_model=request.model_key.registered_model,
                version=len(self.trained),
                semver="1.0.0",
                run_id="r",
            ),
        )
        self.versions[str(request.event_id)] = event
        return event


def request(note: str, at: datetime, key: str = "intent/en-us") -> TrainingRequestedEvent:
    return TrainingRequestedEvent(
        producer="test",
        model_key=key,
        occurred_at=at,
        payload=TrainingRequested(reason=TrainingReason.DRIFT, requested_by="test", note=note),
    )


def handle_all(service: TrainerService, requests: list[TrainingRequestedEvent]) -> list[list]:
    async def run() -> list[list]:
        return [list(await service.handle(r)) for r in requests]

    return asyncio.run(run())


def make() -> tuple[FakeTrainer, TrainerService]:
    trainer = FakeTrainer()
    return trainer, TrainerService(trainer, TrainerMetrics(LoopMetrics("trainer-test")))


def test_requests_made_during_a_training_become_one_follow_up() -> None:
    trainer, service = make()
    first = request("first", T0 - timedelta(minutes=1))
    during = [request(f"during-{i}", T0 + timedelta(minutes=2 + i)) for i in range(3)]
    outputs = handle_all(service, [first, *during])
    assert trainer.trained == ["first", "during-0"]
    assert [len(o) for o in outputs] == [1, 1, 0, 0]


def test_a_request_after_the_follow_up_started_trains_again() -> None:
    trainer, service = make()
    handle_all(service, [request("a", T0 - timedelta(minutes=1))])
    handle_all(service, [request("b", T0 + timedelta(hours=1))])
    assert trainer.trained == ["a", "b"]


def test_a_redelivered_request_publishes_the_same_event_without_training() -> None:
    trainer, service = make()
    first = request("first", T0 - timedelta(minutes=1))
    (original,), (again,) = handle_all(service, [first, first])
    assert trainer.trained == ["first"]
    assert again.event_id == original.event_id and again.payload.version == 1


def test_keys_do_not_coalesce_with_each_other() -> None:
    trainer, service = make()
    handle_all(
        service,
        [
            request("en", T0 - timedelta(minutes=1), "intent/en-us"),
            request("es", T0 + timedelta(minutes=1), "intent/es-es"),
        ],
    )
    assert trainer.trained == ["en", "es"]
