"""driftloop_common: what every driftloop service shares.

Event contracts (`events`), topic names (`topics`), settings, the error tree, JSON
logging, the Kafka adapter, the service loop and the HTTP app factory. Services
depend on this package and never on each other.
"""

from driftloop_common.app import create_app
from driftloop_common.errors import (
    ConfigError,
    DriftloopError,
    InvalidEventError,
    PermanentError,
    RetryableError,
)
from driftloop_common.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Event,
    ModelKey,
    ModelType,
    decode_event,
)
from driftloop_common.logs import configure_logging
from driftloop_common.metrics import LoopMetrics
from driftloop_common.service import LoopState, RetryPolicy, ServiceLoop
from driftloop_common.settings import (
    GenesysSettings,
    KafkaSettings,
    MlflowSettings,
    ServiceSettings,
    load_settings,
)

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "ConfigError",
    "DriftloopError",
    "Event",
    "GenesysSettings",
    "InvalidEventError",
    "KafkaSettings",
    "LoopMetrics",
    "LoopState",
    "MlflowSettings",
    "ModelKey",
    "ModelType",
    "PermanentError",
    "RetryPolicy",
    "RetryableError",
    "ServiceLoop",
    "ServiceSettings",
    "configure_logging",
    "create_app",
    "decode_event",
    "load_settings",
]
