from __future__ import annotations

from driftloop_common.contracts.topics import (
    DRIFT_DETECTED,
    MODEL_EVALUATED,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    MODEL_TRAINED,
    PROMOTION_FAILED,
    ROLLBACK_REQUESTED,
    TRAINING_FAILED,
    TRAINING_REQUESTED,
)
from driftloop_common.runtime.settings import ServiceSettings

LIFECYCLE_TOPICS = (
    DRIFT_DETECTED,
    TRAINING_REQUESTED,
    TRAINING_FAILED,
    MODEL_TRAINED,
    MODEL_EVALUATED,
    MODEL_PROMOTED,
    PROMOTION_FAILED,
    ROLLBACK_REQUESTED,
    MODEL_ROLLED_BACK,
)


class AuditorSettings(ServiceSettings):
    """Read from `DRIFTLOOP_…` variables, like every service (one process, one environment)."""

    service_name: str = "auditor"
    http_port: int = 8100
    topics: tuple[str, ...] = LIFECYCLE_TOPICS
