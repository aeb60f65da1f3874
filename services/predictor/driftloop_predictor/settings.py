from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from driftloop_common.contracts.events import ModelKey
from driftloop_common.runtime.settings import MlflowSettings, ServiceSettings
from driftloop_predictor.batching import BatchConfig


class PredictorSettings(ServiceSettings, BatchConfig):
    """`DRIFTLOOP_…` variables; see the README's configuration table. The micro-batching
    knobs (`DRIFTLOOP_MAX_BATCH_SIZE`, `DRIFTLOOP_BATCH_WAIT_MS`) are `BatchConfig`'s."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "predictor"
    http_port: int = 8800
    # The model keys served, e.g. DRIFTLOOP_SERVE='["intent/en-us", "sentiment/en-us"]'.
    serve: list[ModelKey] = Field(
        default_factory=lambda: [ModelKey.parse("intent/en-us")], min_length=1
    )
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    # When set, every /v2/models/… request needs `Authorization: Bearer <token>`.
    api_token: SecretStr | None = None
    # Intent keys whose answers below the version's validated confidence floor become
    # `abstain_label` (e.g. DRIFTLOOP_ABSTAIN='["intent/en-us"]'); off by default.
    abstain: list[ModelKey] = Field(default_factory=list)
    abstain_label: str = Field(default="out_of_scope", min_length=1)
    # `/explain` shows the texts of the nearest training examples (other customers' words:
    # off by default; their labels and similarities are always shown).
    explain_texts: bool = False
    max_body_bytes: int = Field(default=1 << 20, gt=0)  # 413 above
    max_batch: int = Field(default=256, gt=0)  # inputs per request; 422 above
    # Predictions waiting to be published as `prediction` events; the oldest are dropped
    # (and counted) beyond it, so a Kafka outage never grows the process without bound.
    max_pending_predictions: int = Field(default=100_000, gt=0)
    max_flush_predictions: int = Field(default=5_000, gt=0)  # events per flush
    # A champion that failed to load at start is tried again this often.
    reload_missing_s: float = Field(default=30.0, gt=0)
    # The registry is read again this often without an event (a lost one, a hand-moved alias).
    recheck_s: float = Field(default=30.0, gt=0)
