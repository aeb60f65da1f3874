"""The wire contracts: events and their envelope, topic names, and the error tree.

Nothing here imports a web, Kafka or ML library, so any producer can build and check events.
"""

from driftloop_common.contracts.errors import (
    ConfigError,
    DriftloopError,
    InvalidEventError,
    PermanentError,
    RetryableError,
)
from driftloop_common.contracts.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Event,
    ModelKey,
    ModelType,
    decode_event,
)

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "ConfigError",
    "DriftloopError",
    "Event",
    "InvalidEventError",
    "ModelKey",
    "ModelType",
    "PermanentError",
    "RetryableError",
    "decode_event",
]
