"""The auditor: every lifecycle event in, one audit record out (`handlers.handle`)."""

from __future__ import annotations

from collections.abc import Sequence

from driftloop_auditor.handlers import handle
from driftloop_auditor.settings import AuditorSettings
from driftloop_common.contracts.events import LIFECYCLE_EVENT_CLASSES, Event, decode_event
from driftloop_common.runtime.loop import Record
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.service import ServiceBase


def decode(record: Record) -> Event:
    return decode_event(record.value or b"", expected=LIFECYCLE_EVENT_CLASSES)


class Auditor(ServiceBase[Event]):
    def __init__(self, settings: AuditorSettings) -> None:
        self.topics = settings.topics
        self.metrics = LoopMetrics(settings.service_name)

    def decode(self, record: Record) -> Event:
        return decode(record)

    async def handle(self, value: Event) -> Sequence[Event]:
        return await handle(value)
