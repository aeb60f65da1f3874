from __future__ import annotations

from pydantic import Field

from driftloop_collector.genesys import DEFAULT_MAX_TEXT_BYTES
from driftloop_common.contracts.events import ModelType
from driftloop_common.ml.encoder import DEFAULT_BATCH_SIZE, Precision
from driftloop_common.runtime.settings import ServiceSettings, default_store_url


class CollectorSettings(ServiceSettings):
    """`DRIFTLOOP_…` variables; see the README's configuration table."""

    service_name: str = "collector"
    http_port: int = 8300
    # ~500 conversations of ~5 Genesys messages a poll while catching up: the encoder sorts
    # and packs a flush of hundreds of texts better than one of a hundred
    max_batch_records: int = Field(default=2500, gt=0)
    languages: frozenset[str] = frozenset({"en-us", "es-es"})
    model_types: tuple[ModelType, ...] = (ModelType.INTENT,)  # keys published per interaction
    store_url: str = Field(default_factory=default_store_url)
    encoder_precision: Precision = "fp32"
    encoder_batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    encoder_threads: int | None = Field(default=None, gt=0)
    # conversations embedded per flush at most: bounds the time the loop does not poll
    # (~3 s on one CPU) when a backlog makes thousands due at once
    max_flush_conversations: int = Field(default=512, gt=0)
    wrapup_wait_s: float = Field(default=60.0, gt=0)
    settle_s: float = Field(default=5.0, ge=0)
    max_wait_s: float = Field(default=1800.0, gt=0)
    max_open: int = Field(default=10_000, gt=0)
    wrapup_labels: dict[str, str] | None = None  # Genesys wrap-up code id → label name
    # A conversation's text at most (UTF-8 bytes): one message over it is dead-lettered
    # (`text_too_long`), pieces together over it are cut to it; the encoder reads 256 tokens
    max_text_bytes: int = Field(default=DEFAULT_MAX_TEXT_BYTES, gt=0)
    # Event times accepted around the broker's append time (else the service's clock);
    # others are dead-lettered (`event_time_out_of_range`)
    max_event_age_days: float = Field(default=400.0, gt=0)
    max_event_ahead_days: float = Field(default=1.0, gt=0)
    # The producer's max_request_size (aiokafka's default): a larger interaction.embedded
    # record is dead-lettered (`event_too_large`) instead of failing the flush
    max_event_bytes: int = Field(default=1_048_576, gt=0)
