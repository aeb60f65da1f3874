from __future__ import annotations

from driftloop_common.contracts.events import LIFECYCLE_EVENT_CLASSES
from driftloop_common.runtime.settings import ServiceSettings

LIFECYCLE_TOPICS = tuple(cls.topic for cls in LIFECYCLE_EVENT_CLASSES)


class AuditorSettings(ServiceSettings):
    """Read from `DRIFTLOOP_…` variables, like every service (one process, one environment)."""

    service_name: str = "auditor"
    http_port: int = 8100
    topics: tuple[str, ...] = LIFECYCLE_TOPICS
