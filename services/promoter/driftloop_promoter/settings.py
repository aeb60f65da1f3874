from __future__ import annotations

from pydantic import Field

from driftloop_common.genesys import GenesysClientOptions
from driftloop_common.runtime.settings import (
    GenesysSettings,
    MlflowSettings,
    ServiceSettings,
    default_store_url,
)
from driftloop_promoter.genesys_nlu import GenesysNluOptions
from driftloop_promoter.model_config import ModelConfigOptions
from driftloop_promoter.rollout import RolloutOptions


class PromoterSettings(ServiceSettings):
    """`DRIFTLOOP_…` variables; see the README's configuration table."""

    service_name: str = "promoter"
    http_port: int = 8600
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    store_url: str = Field(default_factory=default_store_url)  # the utterances Genesys learns
    # Deploy targets per model key (`intent/en-us`), model type (`intent`) or all (`*`):
    # `predictor` (the MLflow alias our predictor serves), `genesys-nlu`, `model-config`.
    targets: dict[str, list[str]] = Field(default_factory=lambda: {"*": ["predictor"]})
    genesys: GenesysSettings = Field(default_factory=GenesysSettings)
    genesys_client: GenesysClientOptions = Field(default_factory=GenesysClientOptions)
    genesys_domains: dict[str, str] = Field(default_factory=dict)  # model key → NLU domain id
    genesys_nlu: GenesysNluOptions = Field(default_factory=GenesysNluOptions)
    ml_models: dict[str, str] = Field(default_factory=dict)  # model-config API: key → modelId
    ml_upload: ModelConfigOptions = Field(default_factory=ModelConfigOptions)
    # Stages before a version replaces a champion (`DRIFTLOOP_ROLLOUT__SHADOW_S`, …): none
    # by default; see rollout.py.
    rollout: RolloutOptions = Field(default_factory=RolloutOptions)
    # A promotion may wait minutes for a Genesys training: keep the group membership and
    # the heartbeat meanwhile, and note each record before handling it.
    max_poll_interval_ms: int = Field(default=1_800_000, gt=0)
    busy_heartbeat_s: float = Field(default=5.0, gt=0)
    track_in_flight: bool = True
