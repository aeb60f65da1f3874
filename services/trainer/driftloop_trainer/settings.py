from __future__ import annotations

from pydantic import Field

from driftloop_common.runtime.settings import MlflowSettings, ServiceSettings, default_store_url


class TrainerSettings(ServiceSettings):
    """`DRIFTLOOP_…` variables; see the README's configuration table."""

    service_name: str = "trainer"
    http_port: int = 8500  # each service its own default port (collector: 8300)
    store_url: str = Field(default_factory=default_store_url)  # interactions and feature tables
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    # Days before the request time T at which each split starts and ends.
    train_days: tuple[float, float] = (90.0, 30.0)
    validation_days: tuple[float, float] = (30.0, 7.0)
    test_days: tuple[float, float] = (7.0, 1.0)
    min_train_rows: int = Field(default=200, gt=0)
    min_validation_rows: int = Field(default=50, gt=0)
    min_test_rows: int = Field(default=50, gt=0)
    encoder_precision: str = Field(default="fp32", pattern="^(fp32|int8)$")
    refit_on_validation: bool = True  # the final model also learns from the validation window
    # Full fine-tuning of the encoder: off by default (slow on CPUs); auto = with CUDA.
    fine_tune: str = Field(default="false", pattern="^(true|false|auto)$")
    fine_tune_epochs: int = Field(default=3, gt=0)
    seed: int = 0
    # A request whose as_of (or occurred_at) lies further ahead of now is dead-lettered.
    max_as_of_ahead_hours: float = Field(default=24.0, ge=0)
    # A training takes minutes: the consumer must not be thrown out of its group meanwhile,
    # and the service keeps its heartbeat while it works.
    max_poll_interval_ms: int = Field(default=3_600_000, gt=0)
    busy_heartbeat_s: float = Field(default=5.0, gt=0)
    # One record is minutes of work: note each in Kafka before handling it, so a request
    # that kills the process (OOM) is dead-lettered after max_handler_failures deaths.
    track_in_flight: bool = True
