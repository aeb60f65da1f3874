"""Settings shared by every service, read from the environment (and an optional `.env`).

Nested settings use `__`: `DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS=broker:9092`. Secrets are
`SecretStr`, so they print as `**********` in logs, reprs and events.
"""

from __future__ import annotations

import enum
import os
import ssl
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_common.contracts.errors import ConfigError


class SecurityProtocol(enum.StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(enum.StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaSettings(BaseModel):
    """What a real cluster needs: MSK, Confluent Cloud and Strimzi all fit in here."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    client_id_prefix: str = "driftloop"
    request_timeout_ms: int = Field(default=40_000, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        uses_sasl = self.security_protocol in (
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        )
        if uses_sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        if not uses_sasl and self.sasl_mechanism is not None:
            raise ValueError("sasl_mechanism is set but security_protocol does not use SASL")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol.value,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            assert self.sasl_password is not None
            kwargs["sasl_mechanism"] = self.sasl_mechanism.value
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile and self.ssl_keyfile:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile), password)
        return context


class MlflowSettings(BaseModel):
    tracking_uri: str = "http://127.0.0.1:5000"
    registry_uri: str | None = None


class GenesysSettings(BaseModel):
    """OAuth client credentials for one Genesys Cloud org (region host: `mypurecloud.com`…)."""

    region: str = "mypurecloud.com"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    api_base_url: str | None = None  # overrides https://api.<region>, e.g. for the simulator
    login_base_url: str | None = None  # overrides https://login.<region>


class ServiceSettings(BaseSettings):
    """Base of every service's settings; subclasses add their own fields."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    service_name: str = "driftloop"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    log_json: bool = True
    heartbeat_max_age_s: float = Field(default=30.0, gt=0)
    poll_timeout_ms: int = Field(default=1000, gt=0)
    max_batch_records: int = Field(default=500, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, gt=0)  # longest gap between polls
    retry_attempts: int = Field(default=5, ge=1)
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    # A record whose handler fails this many times with an unexpected error (a bug, not an
    # outage) goes to the DLQ with reason `handler_failed`; the count survives restarts.
    max_handler_failures: int = Field(default=5, ge=1)
    # Long handlers (trainer, evaluator): note in Kafka that a record is being handled, so a
    # record that kills the process (OOM, a native crash) is dead-lettered after
    # `max_handler_failures` deaths instead of crash-looping. A commit per record.
    track_in_flight: bool = False
    # Long handlers keep /healthz beating this often while they work (None: not needed).
    busy_heartbeat_s: float | None = Field(default=None, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # Static group membership (Kafka's group.instance.id), e.g. the pod name: a restart
    # within the session timeout keeps the partitions without a rebalance.
    group_instance_id: str | None = Field(default=None, min_length=1, max_length=249)
    dlq_retention_hours: float = Field(default=168.0, gt=0)  # DLQs hold transcripts
    http_docs: bool = False  # serve FastAPI's /docs, /redoc and /openapi.json


def cache_root() -> Path:
    base = os.environ.get("DRIFTLOOP_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "driftloop" if base else Path.home() / ".cache" / "driftloop"


def state_root() -> Path:
    base = os.environ.get("DRIFTLOOP_STATE_DIR") or os.environ.get("XDG_STATE_HOME")
    return Path(base) / "driftloop" if base else Path.home() / ".local" / "state" / "driftloop"


def default_store_url() -> str:
    """The interaction store of a local run: `~/.local/state/driftloop/store`."""
    return str(state_root() / "store")


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings, turning a validation error into a `ConfigError` that names the variable."""
    from pydantic import ValidationError

    prefix = cls.model_config.get("env_prefix", "")
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{prefix}{'__'.join(str(p) for p in err['loc']).upper()}: " if err["loc"] else "")
            + err["msg"]
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid configuration ({cls.__name__}): {problems}") from exc
