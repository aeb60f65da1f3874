"""Pure handler: a lifecycle event in, its audit record out."""

from __future__ import annotations

from driftloop_common.contracts.describe import describe
from driftloop_common.contracts.events import Audit, AuditEvent, Event

SERVICE = "auditor"


async def handle(event: Event) -> list[Event]:
    """One audit record per event; its id derives from the source id, so a redelivery
    yields the same record (readers deduplicate by `event_id`)."""
    record = Audit(
        action=event.event_type,
        actor=event.producer,
        subject=str(event.model_key),
        details={
            "source_event_id": str(event.event_id),
            "occurred_at": event.occurred_at.isoformat(),
            "summary": describe(event),
        },
    )
    return [event.follow_up(AuditEvent, producer=SERVICE, payload=record)]
