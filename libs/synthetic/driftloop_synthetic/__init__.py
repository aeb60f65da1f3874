"""Synthetic contact-center interactions with controllable drift, for tests and the demo.

from datetime import UTC, datetime
from driftloop_synthetic import DriftSpec, GeneratorConfig, generate, kafka_records

config = GeneratorConfig(
    seed=7,
    count=20_000,
    drift=(
        DriftSpec(at=datetime(2026, 3, 1, tzinfo=UTC), product="Zephyr", product_share=0.3),
        DriftSpec(at=datetime(2026, 4, 1, tzinfo=UTC), intent_weights={"crypto_wallet": 0.1}),
    ),
)
for key, value in kafka_records(generate(config), shuffle_window=20):
    ...
"""

from driftloop_synthetic.generator import (
    DEFAULT_INTENT_WEIGHTS,
    EMERGING_INTENTS,
    INTENTS,
    LANGUAGES,
    MEDIA_TYPES,
    OUT_OF_SCOPE,
    QUEUE_OF_INTENT,
    QUEUES,
    DriftSpec,
    GeneratorConfig,
    Interaction,
    TrafficMix,
    generate,
)
from driftloop_synthetic.genesys import (
    CUSTOMER_END_TOPIC,
    QUEUE_IDS,
    TRANSCRIPTION_TOPIC,
    WRAPUP_TOPIC,
    conversation_messages,
)
from driftloop_synthetic.records import (
    OutputFormat,
    encode,
    kafka_records,
    message_key,
    shuffle_within,
    to_raw_event,
)

__all__ = [
    "CUSTOMER_END_TOPIC",
    "DEFAULT_INTENT_WEIGHTS",
    "EMERGING_INTENTS",
    "INTENTS",
    "LANGUAGES",
    "MEDIA_TYPES",
    "OUT_OF_SCOPE",
    "QUEUES",
    "QUEUE_IDS",
    "QUEUE_OF_INTENT",
    "TRANSCRIPTION_TOPIC",
    "WRAPUP_TOPIC",
    "DriftSpec",
    "GeneratorConfig",
    "Interaction",
    "OutputFormat",
    "TrafficMix",
    "conversation_messages",
    "encode",
    "generate",
    "kafka_records",
    "message_key",
    "shuffle_within",
    "to_raw_event",
]
