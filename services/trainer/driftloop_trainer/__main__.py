"""`python -m driftloop_trainer` (or `driftloop service trainer`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from driftloop_common import topics
from driftloop_common.events import TrainingRequestedEvent, decode_event
from driftloop_common.metrics import LoopMetrics
from driftloop_common.modeling.splits import SplitConfig
from driftloop_common.runtime import run_service
from driftloop_common.service import Record
from driftloop_common.settings import load_settings
from driftloop_trainer.service import TrainerMetrics, TrainerService
from driftloop_trainer.settings import TrainerSettings
from driftloop_trainer.training import Trainer, TrainerConfig, request_time


def trainer_config(settings: TrainerSettings) -> TrainerConfig:
    return TrainerConfig(
        tracking_uri=settings.mlflow.tracking_uri,
        registry_uri=settings.mlflow.registry_uri,
        store_url=settings.store_url,
        splits=SplitConfig(
            train_days=settings.train_days,
            validation_days=settings.validation_days,
            test_days=settings.test_days,
        ),
        min_rows={
            "train": settings.min_train_rows,
            "validation": settings.min_validation_rows,
            "test": settings.min_test_rows,
        },
        encoder_precision=settings.encoder_precision,
        refit_on_validation=settings.refit_on_validation,
        fine_tune=settings.fine_tune,
        fine_tune_epochs=settings.fine_tune_epochs,
        seed=settings.seed,
        max_as_of_ahead=timedelta(hours=settings.max_as_of_ahead_hours),
    )


def decoder(config: TrainerConfig) -> Callable[[Record], TrainingRequestedEvent]:
    """Decodes a `training.requested` and checks its times (year 1, year 9999: `InvalidAsOf`,
    to the DLQ) before anything reads MLflow or the store."""

    def decode(record: Record) -> TrainingRequestedEvent:
        request = decode_event(record.value or b"", expected=(TrainingRequestedEvent,))
        request_time(request, config)
        return request

    return decode


def main() -> None:
    settings = load_settings(TrainerSettings)
    metrics = LoopMetrics(settings.service_name)
    config = trainer_config(settings)
    service = TrainerService(Trainer(config), TrainerMetrics(metrics))
    run_service(
        settings,
        topics=[topics.TRAINING_REQUESTED],
        decode=decoder(config),
        handle=service.handle,
        metrics=metrics,
        busy_heartbeat_s=settings.busy_heartbeat_s,
    )


if __name__ == "__main__":
    main()
