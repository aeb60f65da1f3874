"""Pure handler: a lifecycle event in, its audit record out."""

from __future__ import annotations

from driftloop_common.contracts.events import Audit, AuditEvent, Event

SERVICE = "auditor"


def summarize(event: Event) -> str:
    """A one-line account of what happened, for people reading the audit topic."""
    p = event.payload.model_dump(mode="json", exclude_none=True)
    match event.event_type:
        case "training.requested":
            return f"training requested ({p['reason']}) by {p['requested_by']}"
        case "training.failed":
            return f"training failed: {p['reason']}"
        case "model.trained":
            return f"version {p['version']} ({p['semver']}) trained, run {p['run_id']}"
        case "model.evaluated":
            verdict = "passed" if p["passed"] else "failed: " + "; ".join(p.get("reasons", []))
            return f"version {p['version']} evaluation {verdict}"
        case "model.promoted":
            return f"version {p['version']} promoted to {', '.join(p['targets'])}"
        case "promotion.failed":
            return f"version {p['version']} promotion to {p['target']} failed: {p['error']}"
        case "rollback.requested":
            target = f" to version {p['to_version']}" if "to_version" in p else ""
            return f"rollback{target} requested by {p['requested_by']}: {p['reason']}"
        case "model.rolled_back":
            return f"rolled back from {p['from_version']} to {p['to_version']}: {p['reason']}"
        case "drift.detected":
            fired = [s["detector"] for s in p["scores"] if s["fired"]]
            return f"drift ({p['psi_level']}) over {p['window_size']} rows: {', '.join(fired)}"
        case _:
            return event.event_type


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
            "summary": summarize(event),
        },
    )
    return [event.follow_up(AuditEvent, producer=SERVICE, payload=record)]
