from __future__ import annotations

from pydantic import Field

from driftloop_common.runtime.settings import MlflowSettings, ServiceSettings, default_store_url


class EvaluatorSettings(ServiceSettings):
    """`DRIFTLOOP_…` variables; see the README's configuration table."""

    service_name: str = "evaluator"
    http_port: int = 8400
    store_url: str = Field(default_factory=default_store_url)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    f1_delta: float = Field(default=0.03, ge=0)  # challenger macro-F1 ≥ champion + delta
    f1_floor: float = Field(default=0.6, ge=0, le=1)
    max_class_drop: float = Field(default=0.10, ge=0, le=1)
    min_agreement: float | None = Field(default=None, ge=0, le=1)  # shadow gate, off by default
    rmse_improvement: float = Field(default=0.02, ge=0, lt=1)  # tabular: relative
    r2_floor: float = 0.0
    shadow_hours: float = Field(default=24.0, gt=0)
    shadow_max_rows: int = Field(default=2000, gt=0)
    min_test_rows: int = Field(default=20, gt=0)
    max_poll_interval_ms: int = Field(default=1_800_000, gt=0)
    busy_heartbeat_s: float = Field(default=5.0, gt=0)
    # One record is minutes of work: note each in Kafka before handling it, so a request
    # that kills the process (OOM) is dead-lettered after max_handler_failures deaths.
    track_in_flight: bool = True
