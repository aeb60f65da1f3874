from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop_common.runtime.settings import ServiceSettings
from driftloop_evaluator.evaluation import EvaluatorConfig


class EvaluatorSettings(ServiceSettings, EvaluatorConfig):
    """`DRIFTLOOP_…` variables; see the README's configuration table. The evaluation's own
    fields (the rules, shadow options, MLflow, the store) are `EvaluatorConfig`'s: the
    service hands these settings to the `Evaluator` as they are."""

    # Configs refuse unknown fields (a misspelt keyword); settings ignore what is not theirs.
    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "evaluator"
    http_port: int = 8400
    max_poll_interval_ms: int = Field(default=1_800_000, gt=0)
    busy_heartbeat_s: float = Field(default=5.0, gt=0)
    # One record is minutes of work: note each in Kafka before handling it, so a request
    # that kills the process (OOM) is dead-lettered after max_handler_failures deaths.
    track_in_flight: bool = True
