"""The auditor's pure handler: one audit record per lifecycle event, deterministic ids."""

from __future__ import annotations

import uuid

import pytest

from driftloop_auditor.handlers import handle
from driftloop_auditor.service import decode
from driftloop_auditor.settings import LIFECYCLE_TOPICS
from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import InvalidEventError
from driftloop_common.contracts.events import (
    Audit,
    AuditEvent,
    ModelEvaluated,
    ModelEvaluatedEvent,
    RollbackRequested,
    RollbackRequestedEvent,
)
from tests.unit.fakes import FakeRecord


def evaluated(passed: bool) -> ModelEvaluatedEvent:
    return ModelEvaluatedEvent(
        producer="evaluator",
        model_key="intent/en-us",
        payload=ModelEvaluated(
            registered_model="intent-en-us",
            version=4,
            passed=passed,
            reasons=[] if passed else ["macro-F1 0.81 < champion 0.80 + 0.03"],
        ),
    )


async def test_audit_record_points_back_to_its_source_and_chain() -> None:
    source = evaluated(passed=False)
    (record,) = await handle(source)
    assert record.event_type == "audit"
    assert record.correlation_id == source.correlation_id
    assert record.payload.subject == "intent/en-us"
    assert record.payload.actor == "evaluator"
    assert record.payload.details["source_event_id"] == str(source.event_id)
    assert "failed: macro-F1 0.81 < champion 0.80 + 0.03" in record.payload.details["summary"]


async def test_redelivery_yields_the_same_audit_record_id() -> None:
    source = evaluated(passed=True)
    first, again = (await handle(source))[0], (await handle(source))[0]
    assert first.event_id == again.event_id
    other = (await handle(source.model_copy(update={"event_id": uuid.uuid4()})))[0]
    assert other.event_id != first.event_id


async def test_summary_of_a_rollback_names_the_model_and_the_target_version() -> None:
    event = RollbackRequestedEvent(
        producer="cli",
        model_key="sentiment/es-es",
        payload=RollbackRequested(reason="bad release", requested_by="ana", to_version=6),
    )
    (record,) = await handle(event)
    summary = record.payload.details["summary"]
    assert all(fact in summary for fact in ("sentiment/es-es", "v6", "ana", "bad release"))


def test_the_auditor_reads_every_topic_but_the_streams_and_its_own() -> None:
    streams = {topics.INTERACTIONS_RAW, topics.INTERACTIONS_EMBEDDED, topics.PREDICTIONS}
    assert sorted(LIFECYCLE_TOPICS) == sorted(set(topics.ALL_TOPICS) - streams - {topics.AUDIT})


def test_the_auditor_rejects_an_audit_record() -> None:
    audit = AuditEvent(
        producer="auditor",
        model_key="intent/en-us",
        payload=Audit(action="model.promoted", actor="promoter", subject="intent/en-us"),
    )
    with pytest.raises(InvalidEventError, match="not accepted here"):
        decode(FakeRecord(topics.AUDIT, 0, 0, audit.to_bytes(), key=audit.key))
