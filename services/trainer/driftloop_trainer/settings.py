from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop_common.runtime.settings import ServiceSettings
from driftloop_trainer.training import TrainerConfig


class TrainerSettings(ServiceSettings, TrainerConfig):
    """`DRIFTLOOP_…` variables; see the README's configuration table. The training's own
    fields (splits, row minimums, fitting options, MLflow, the store) are `TrainerConfig`'s:
    the service hands these settings to the `Trainer` as they are."""

    # Configs refuse unknown fields (a misspelt keyword); settings ignore what is not theirs.
    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "trainer"
    http_port: int = 8500  # each service its own default port (collector: 8300)
    # A training takes minutes: the consumer must not be thrown out of its group meanwhile,
    # and the service keeps its heartbeat while it works.
    max_poll_interval_ms: int = Field(default=3_600_000, gt=0)
    busy_heartbeat_s: float = Field(default=5.0, gt=0)
    # One record is minutes of work: note each in Kafka before handling it, so a request
    # that kills the process (OOM) is dead-lettered after max_handler_failures deaths.
    track_in_flight: bool = True
