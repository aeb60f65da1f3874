"""The simulator's settings: `DRIFTLOOP_SIM_…` variables (nested with `__`).

    DRIFTLOOP_SIM_CLIENT_ID=driftloop DRIFTLOOP_SIM_CLIENT_SECRET=s3cret
    DRIFTLOOP_SIM_TOKEN_TTL_S=60 DRIFTLOOP_SIM_TRAINING_DELAY_S=2
    DRIFTLOOP_SIM_RATE_PER_S=3 DRIFTLOOP_SIM_BURST=180
    DRIFTLOOP_SIM_FAULTS__ERROR_BURST=3 DRIFTLOOP_SIM_DOMAINS='["my-domain-id"]'

`FaultSettings` are the faults switched on at start; `POST /admin/faults` changes them at
run time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_common.contracts.errors import ConfigError

ENV_PREFIX = "DRIFTLOOP_SIM_"


class FaultSettings(BaseModel):
    """Switchable faults. Counts are consumed by the API calls (`/api/v2/…`) they hit."""

    model_config = ConfigDict(extra="forbid")

    error_burst: int = Field(default=0, ge=0)  # the next N API calls answer `error_status`
    error_status: int = Field(default=503, ge=500, le=599)
    slow_s: float = Field(default=0.0, ge=0, le=600)  # every API call waits this long first
    storm_429: int = Field(default=0, ge=0)  # the next N API calls answer 429
    storm_retry_after_s: int = Field(default=1, ge=0, le=3600)  # their Retry-After
    fail_next_training: bool = False  # the next `train` ends in trainingStatus Error


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8089, ge=0, le=65535)
    client_id: str = Field(default="driftloop", min_length=1)
    client_secret: SecretStr = SecretStr("driftloop-secret")
    # More OAuth clients (id → secret), each with its own rate-limit bucket.
    clients: dict[str, SecretStr] = Field(default_factory=dict)
    token_ttl_s: float = Field(default=86_400.0, gt=0)  # Genesys's default: 24 h
    training_delay_s: float = Field(default=5.0, ge=0)  # Untrained → Training → Trained
    rate_per_s: float = Field(default=3.0, gt=0)  # token-bucket refill per client
    burst: int = Field(default=180, ge=1)  # bucket size = `inin-ratelimit-allowed`
    max_request_bytes: int = Field(default=512 * 1024, ge=1)  # above: 413
    # NLU domains and model-config models that exist from the start; with `auto_create`,
    # an unknown id is created on first use instead of answering 404.
    domains: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    auto_create: bool = True
    default_language: str = "en-us"
    # Interactions per `POST /api/v2/ml/trainingdata` (the guide asks for chunks of 10–50).
    min_chunk: int = Field(default=1, ge=1)
    max_chunk: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=500, ge=1)
    faults: FaultSettings = Field(default_factory=FaultSettings)

    @model_validator(mode="after")
    def _consistent(self) -> SimulatorSettings:
        if self.min_chunk > self.max_chunk:
            raise ValueError(f"min_chunk {self.min_chunk} > max_chunk {self.max_chunk}")
        if self.client_id in self.clients:
            raise ValueError(f"client {self.client_id!r} is given twice (client_id and clients)")
        return self

    def credentials(self) -> dict[str, str]:
        """Every OAuth client id with its secret."""
        found = {cid: secret.get_secret_value() for cid, secret in self.clients.items()}
        found[self.client_id] = self.client_secret.get_secret_value()
        return found


def load_settings(**overrides: Any) -> SimulatorSettings:
    """Settings from the environment; a bad value is a `ConfigError` naming the variable."""
    try:
        return SimulatorSettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid simulator configuration: {problems}") from exc
