"""Event contracts: every type round-trips; bad payloads are rejected naming the field."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import InvalidEventError
from driftloop_common.contracts.events import (
    EVENT_CLASSES,
    EVENT_TYPES,
    Audit,
    AuditEvent,
    DetectorScore,
    DriftDetected,
    DriftDetectedEvent,
    EncoderInfo,
    Event,
    InteractionEmbedded,
    InteractionEmbeddedEvent,
    InteractionRaw,
    InteractionRawEvent,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    ModelPromoted,
    ModelPromotedEvent,
    ModelRolledBack,
    ModelRolledBackEvent,
    ModelTrained,
    ModelTrainedEvent,
    ModelType,
    Prediction,
    PredictionEvent,
    PromotionFailed,
    PromotionFailedEvent,
    RollbackRequested,
    RollbackRequestedEvent,
    TrainingFailed,
    TrainingFailedEvent,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
    decode_event,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = ModelKey(model_type=ModelType.INTENT, language="en-us")
REQ = uuid.uuid4()


def _drift() -> DriftDetected:
    return DriftDetected(
        window_start=NOW - timedelta(hours=24),
        window_end=NOW,
        window_size=2000,
        psi_level="stable",
        scores=[
            DetectorScore(
                detector="component_psi",
                statistic="mean",
                value=0.012,
                null_quantile=0.008,
                fired=True,
            )
        ],
    )


EXAMPLES: list[Event] = [
    InteractionRawEvent(
        producer="t",
        model_key=KEY,
        payload=InteractionRaw(
            conversation_id="c1",
            text="I lost my card",
            language="en-us",
            completed_at=NOW,
            label="card_lost",
        ),
    ),
    InteractionEmbeddedEvent(
        producer="t",
        model_key=KEY,
        payload=InteractionEmbedded(
            conversation_id="c1",
            language="en-us",
            completed_at=NOW,
            embedding=[0.1, -0.2, 0.3],
            encoder=EncoderInfo(id="sentence-transformers/all-MiniLM-L6-v2", precision="fp32"),
        ),
    ),
    DriftDetectedEvent(producer="t", model_key=KEY, payload=_drift()),
    TrainingRequestedEvent(
        producer="t",
        model_key=KEY,
        payload=TrainingRequested(
            reason=TrainingReason.DRIFT, requested_by="drift-monitor", drift=_drift()
        ),
    ),
    TrainingFailedEvent(
        producer="t",
        model_key=KEY,
        payload=TrainingFailed(
            request_event_id=REQ, reason="too few rows in test split", counts={"test": 12}
        ),
    ),
    ModelTrainedEvent(
        producer="t",
        model_key=KEY,
        payload=ModelTrained(
            request_event_id=REQ,
            registered_model="intent-en-us",
            version=3,
            semver="1.1.0",
            run_id="abc",
            labels=["billing", "refund"],
            metrics={"test_macro_f1": 0.91},
        ),
    ),
    ModelEvaluatedEvent(
        producer="t",
        model_key=KEY,
        payload=ModelEvaluated(
            registered_model="intent-en-us",
            version=3,
            passed=False,
            reasons=["macro-F1 0.91 < champion 0.90 + 0.03"],
            champion_version=2,
        ),
    ),
    ModelPromotedEvent(
        producer="t",
        model_key=KEY,
        payload=ModelPromoted(
            registered_model="intent-en-us",
            version=3,
            previous_version=2,
            targets=["predictor"],
            confidence_at_promotion=0.83,
        ),
    ),
    PromotionFailedEvent(
        producer="t",
        model_key=KEY,
        payload=PromotionFailed(
            registered_model="intent-en-us", version=3, target="genesys", error="429"
        ),
    ),
    RollbackRequestedEvent(
        producer="t",
        model_key=KEY,
        payload=RollbackRequested(
            reason="confidence dropped", requested_by="rollback-watcher", to_version=2
        ),
    ),
    ModelRolledBackEvent(
        producer="t",
        model_key=KEY,
        payload=ModelRolledBack(
            registered_model="intent-en-us", from_version=3, to_version=2, reason="confidence"
        ),
    ),
    PredictionEvent(
        producer="t",
        model_key=KEY,
        payload=Prediction(version=3, label="billing", confidence=0.7, served_by="predictor"),
    ),
    AuditEvent(
        producer="t",
        model_key=KEY,
        payload=Audit(action="model.promoted", actor="promoter", subject="intent/en-us"),
    ),
]


def test_examples_cover_every_event_type() -> None:
    assert sorted(e.event_type for e in EXAMPLES) == sorted(EVENT_TYPES)


def test_the_topics_are_those_of_the_event_classes() -> None:
    # interactions.raw also carries Genesys records, but InteractionRawEvent is its
    # driftloop event: no topic goes without one.
    assert sorted(topics.ALL_TOPICS) == sorted({cls.topic for cls in EVENT_CLASSES})


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_type)
def test_round_trip(event: Event) -> None:
    decoded = decode_event(event.to_bytes())
    assert type(decoded) is type(event)
    assert decoded == event


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_type)
def test_wire_format_is_plain_json_with_version(event: Event) -> None:
    wire = json.loads(event.to_bytes())
    assert wire["schema_version"] == 1
    assert wire["model_key"] == "intent/en-us"
    assert wire["event_type"] == event.event_type


def _wire(**changes: object) -> dict:
    wire = json.loads(EXAMPLES[3].to_bytes())  # training.requested
    wire.update(changes)
    return wire


def test_unknown_fields_are_ignored() -> None:
    wire = _wire(added_in_v2="x")
    wire["payload"]["also_new"] = 1
    event = decode_event(json.dumps(wire))
    assert event.event_id == EXAMPLES[3].event_id


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"payload": {"reason": "boredom", "requested_by": "me"}}, "payload.reason", "schema"),
        ({"payload": {"reason": "manual"}}, "payload.requested_by", "schema"),
        ({"occurred_at": "2026-11-24T12:00:00"}, "occurred_at", "schema"),
        ({"schema_version": 2}, "schema_version", "schema"),
        ({"schema_version": "1"}, "schema_version", "schema"),
        ({"model_key": "intent"}, "model_key", "schema"),
        ({"model_key": "weather/en-us"}, "model_key.model_type", "schema"),
        ({"event_id": "not-a-uuid"}, "event_id", "schema"),
        ({"event_type": "model.exploded"}, "event_type", "unknown_event_type"),
    ],
)
def test_bad_payloads_are_rejected_naming_the_field(change: dict, field: str, code: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_event(json.dumps(_wire(**change)))
    assert str(info.value).startswith(f"{field}:"), str(info.value)
    assert info.value.code == code


def test_missing_envelope_field_is_named() -> None:
    wire = _wire()
    del wire["producer"]
    with pytest.raises(InvalidEventError, match=r"^producer: Field required"):
        decode_event(json.dumps(wire))


def test_invalid_json_is_rejected() -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_event(b'{"event_type": ')
    assert info.value.code == "invalid_json"


def test_expected_types_restrict_what_a_consumer_accepts() -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_event(EXAMPLES[0].to_bytes(), expected=(TrainingRequestedEvent,))
    assert info.value.code == "unexpected_event_type"
    assert "training.requested" in str(info.value)


def test_model_key_normalizes_language_and_prints_as_key() -> None:
    key = ModelKey.parse("sentiment/ES_es")
    assert str(key) == "sentiment/es-es"
    assert key == ModelKey(model_type="sentiment", language="es-es")
    with pytest.raises(ValueError, match="BCP 47"):
        ModelKey.parse("intent/english!")


def test_follow_up_keeps_the_chain_and_is_deterministic() -> None:
    source = EXAMPLES[3]
    payload = Audit(action="a", actor="b", subject="c")
    first = source.follow_up(AuditEvent, producer="auditor", payload=payload)
    again = source.follow_up(AuditEvent, producer="auditor", payload=payload)
    other = EXAMPLES[4].follow_up(AuditEvent, producer="auditor", payload=payload)
    assert first.event_id == again.event_id != other.event_id
    assert first.correlation_id == source.correlation_id
    assert first.model_key == source.model_key
