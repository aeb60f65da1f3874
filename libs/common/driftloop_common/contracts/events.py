"""Event contracts: one envelope for every topic, one payload model per event type.

On the wire every event is JSON:

    {"event_id": "…uuid…", "event_type": "training.requested", "schema_version": 1,
     "occurred_at": "2026-11-24T20:00:00+00:00", "correlation_id": "…uuid…",
     "producer": "cli", "model_key": "intent/en-us", "payload": {…}}

Unknown fields are ignored (a newer producer may add some); a missing or wrongly
typed field is rejected with a message that names it (`decode_event`). Types are
strict: `"5"` is not a number and a naive timestamp is not a time.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import InvalidEventError

SCHEMA_VERSION = 1
"""The envelope/payload version this build writes and reads."""

_CONFIG = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)  # JSON has no inf


class ModelType(enum.StrEnum):
    """The model families driftloop keeps accurate."""

    INTENT = "intent"
    SENTIMENT = "sentiment"
    NEXT_BEST_ACTION = "next-best-action"
    LEAD_SCORE = "lead-score"


_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")


class ModelKey(BaseModel):
    """`(model_type, language)`: one model end to end, written `intent/en-us`.

    It is the Kafka message key on every topic, so one model's events stay in
    order in one partition. Languages are lower-case BCP 47 tags (`en-us`, `es-es`).
    """

    model_config = ConfigDict(frozen=True)

    model_type: ModelType
    language: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            model_type, sep, language = value.partition("/")
            if not sep:
                raise ValueError(f"model key must look like 'intent/en-us', got {value!r}")
            return {"model_type": model_type, "language": language}
        return value

    @field_validator("language", mode="before")
    @classmethod
    def _normalize_language(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower().replace("_", "-")
            if not _LANGUAGE.match(value):
                raise ValueError(f"language must be a BCP 47 tag such as 'en-us', got {value!r}")
        return value

    @model_serializer(mode="plain")
    def _to_string(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.model_type.value}/{self.language}"

    @classmethod
    def parse(cls, text: str) -> ModelKey:
        return cls.model_validate(text)

    @property
    def registered_model(self) -> str:
        """The MLflow registered model of this key, e.g. `intent-en-us`."""
        return f"{self.model_type.value}-{self.language}"


# ---------------------------------------------------------------- payloads


class Payload(BaseModel):
    model_config = _CONFIG


class EncoderInfo(Payload):
    """Which encoder made an embedding: fp32 and int8 vectors must never be mixed."""

    id: str
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"


class InteractionRaw(Payload):
    """The normalized form of one finished interaction, for users with transcripts.

    (Genesys events also arrive on `interactions.raw` in their own shapes; the
    collector accepts those too.)
    """

    conversation_id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    language: str
    completed_at: AwareDatetime
    label: str | None = None
    queue: str | None = None
    media_type: str | None = None


class InteractionEmbedded(Payload):
    conversation_id: str = Field(min_length=1)
    language: str
    completed_at: AwareDatetime
    embedding: list[float] = Field(min_length=1)
    encoder: EncoderInfo
    label: str | None = None
    text: str | None = None
    queue: str | None = None
    media_type: str | None = None


class DetectorScore(Payload):
    """One drift statistic, next to its null distribution's quantile at this window size."""

    detector: str
    statistic: str
    value: float
    null_quantile: float | None = None
    fired: bool


class DriftDetected(Payload):
    window_start: AwareDatetime
    window_end: AwareDatetime
    window_size: PositiveInt
    scores: list[DetectorScore]
    psi_level: Literal["stable", "warning", "major"]
    baseline_version: str | None = None


class TrainingReason(enum.StrEnum):
    DRIFT = "drift"
    NEW_INTENT = "new_intent"
    MANUAL = "manual"
    SCHEDULE = "schedule"


class TrainingRequested(Payload):
    reason: TrainingReason
    requested_by: str = Field(min_length=1)
    note: str | None = None
    as_of: AwareDatetime | None = None
    new_label: str | None = None
    drift: DriftDetected | None = None


class TrainingFailed(Payload):
    request_event_id: uuid.UUID
    reason: str
    counts: dict[str, NonNegativeInt] = Field(default_factory=dict)


class ModelTrained(Payload):
    request_event_id: uuid.UUID
    registered_model: str
    version: PositiveInt
    semver: str
    run_id: str
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)


class ModelEvaluated(Payload):
    registered_model: str
    version: PositiveInt
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    champion_version: PositiveInt | None = None


Stage = Literal["shadow", "canary", "champion"]
"""Where a promoted version serves: `shadow` (scored beside the champion, never answered),
`canary` (answers a share of conversations, sticky by conversation id), `champion` (all)."""


class ModelPromoted(Payload):
    registered_model: str
    version: PositiveInt
    previous_version: PositiveInt | None = None
    targets: list[str] = Field(min_length=1)
    stage: Stage = "champion"
    share_percent: float | None = Field(default=None, gt=0, lt=100)  # a canary's share
    # What the evaluation measured, for the rollback-watcher to compare live traffic with:
    # the mean confidence on recent traffic, and the accuracy on the newest test rows.
    confidence_at_promotion: float | None = None
    expected_accuracy: float | None = Field(default=None, ge=0, le=1)


class PromotionFailed(Payload):
    registered_model: str
    version: PositiveInt
    target: str
    error: str


class RollbackRequested(Payload):
    reason: str
    requested_by: str = Field(min_length=1)
    to_version: PositiveInt | None = None
    # The version whose numbers fell: a staged (shadow or canary) one ends its stage; the
    # champion (or None) is replaced by the previous one.
    from_version: PositiveInt | None = None


class ModelRolledBack(Payload):
    registered_model: str
    from_version: PositiveInt
    to_version: PositiveInt
    reason: str
    stage: Stage = "champion"  # the stage `from_version` held (a staged one: its stage ended)


class Prediction(Payload):
    version: PositiveInt
    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    served_by: str
    conversation_id: str | None = None
    stage: Stage = "champion"  # a shadow prediction was never answered


class Audit(Payload):
    action: str
    actor: str
    subject: str
    details: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------- envelope

E = TypeVar("E", bound="Event")


class Event(BaseModel):
    """The envelope shared by every event type. Subclasses pin `event_type` and `payload`."""

    model_config = _CONFIG

    topic: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    schema_version: int = SCHEMA_VERSION
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    correlation_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    producer: str = Field(min_length=1)
    model_key: ModelKey
    payload: Payload

    @field_validator("schema_version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if not 1 <= value <= SCHEMA_VERSION:  # older versions stay readable in an upgrade
            raise ValueError(
                f"unsupported schema_version {value}; this build reads 1 to {SCHEMA_VERSION}"
            )
        return value

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @property
    def key(self) -> bytes:
        """The Kafka message key: the model key."""
        return str(self.model_key).encode()

    def follow_up(
        self, event_cls: type[E], *, producer: str, payload: Payload, part: str = "", **kw: Any
    ) -> E:
        """An event caused by this one: same correlation id and model key, and an id
        derived from this event's id, the producer and the new type, so handling the
        same input twice yields the same event (downstream deduplicates by id).
        A handler that emits several events of one type from one input tells them apart
        with `part`."""
        kw.setdefault("model_key", self.model_key)
        kind = event_cls.model_fields["event_type"].default
        kw.setdefault("event_id", uuid.uuid5(self.event_id, f"{producer}:{kind}:{part}"))
        return event_cls(
            producer=producer, correlation_id=self.correlation_id, payload=payload, **kw
        )


class InteractionRawEvent(Event):
    topic: ClassVar[str] = topics.INTERACTIONS_RAW
    event_type: Literal["interaction.raw"] = "interaction.raw"
    payload: InteractionRaw


class InteractionEmbeddedEvent(Event):
    topic: ClassVar[str] = topics.INTERACTIONS_EMBEDDED
    event_type: Literal["interaction.embedded"] = "interaction.embedded"
    payload: InteractionEmbedded


class DriftDetectedEvent(Event):
    topic: ClassVar[str] = topics.DRIFT_DETECTED
    event_type: Literal["drift.detected"] = "drift.detected"
    payload: DriftDetected


class TrainingRequestedEvent(Event):
    topic: ClassVar[str] = topics.TRAINING_REQUESTED
    event_type: Literal["training.requested"] = "training.requested"
    payload: TrainingRequested


class TrainingFailedEvent(Event):
    topic: ClassVar[str] = topics.TRAINING_FAILED
    event_type: Literal["training.failed"] = "training.failed"
    payload: TrainingFailed


class ModelTrainedEvent(Event):
    topic: ClassVar[str] = topics.MODEL_TRAINED
    event_type: Literal["model.trained"] = "model.trained"
    payload: ModelTrained


class ModelEvaluatedEvent(Event):
    topic: ClassVar[str] = topics.MODEL_EVALUATED
    event_type: Literal["model.evaluated"] = "model.evaluated"
    payload: ModelEvaluated


class ModelPromotedEvent(Event):
    topic: ClassVar[str] = topics.MODEL_PROMOTED
    event_type: Literal["model.promoted"] = "model.promoted"
    payload: ModelPromoted


class PromotionFailedEvent(Event):
    topic: ClassVar[str] = topics.PROMOTION_FAILED
    event_type: Literal["promotion.failed"] = "promotion.failed"
    payload: PromotionFailed


class RollbackRequestedEvent(Event):
    topic: ClassVar[str] = topics.ROLLBACK_REQUESTED
    event_type: Literal["rollback.requested"] = "rollback.requested"
    payload: RollbackRequested


class ModelRolledBackEvent(Event):
    topic: ClassVar[str] = topics.MODEL_ROLLED_BACK
    event_type: Literal["model.rolled_back"] = "model.rolled_back"
    payload: ModelRolledBack


class PredictionEvent(Event):
    topic: ClassVar[str] = topics.PREDICTIONS
    event_type: Literal["prediction"] = "prediction"
    payload: Prediction


class AuditEvent(Event):
    topic: ClassVar[str] = topics.AUDIT
    event_type: Literal["audit"] = "audit"
    payload: Audit


LIFECYCLE_EVENT_CLASSES: tuple[type[Event], ...] = (
    DriftDetectedEvent,
    TrainingRequestedEvent,
    TrainingFailedEvent,
    ModelTrainedEvent,
    ModelEvaluatedEvent,
    ModelPromotedEvent,
    PromotionFailedEvent,
    RollbackRequestedEvent,
    ModelRolledBackEvent,
)
"""A model's life, drift to rollback: what the auditor records. Not the interaction and
prediction streams, nor the audit records themselves."""

EVENT_CLASSES: tuple[type[Event], ...] = (
    InteractionRawEvent,
    InteractionEmbeddedEvent,
    *LIFECYCLE_EVENT_CLASSES,
    PredictionEvent,
    AuditEvent,
)
"""Every event type, each with its topic: the one list the topic lists derive from."""

EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["event_type"].default: cls for cls in EVENT_CLASSES
}

# `Union[tuple]` because a union built from a tuple has no `X | Y` spelling.
AnyEvent: Any = Annotated[Union[EVENT_CLASSES], Field(discriminator="event_type")]  # noqa: UP007
"""Any event, told apart by `event_type`: the discriminated union of `EVENT_CLASSES`."""
_ANY_EVENT: TypeAdapter[Event] = TypeAdapter(AnyEvent)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field path: `payload.reason: Input should be …`."""
    lines = []
    for err in exc.errors(include_url=False):
        if err["type"].startswith("union_tag"):
            loc = "event_type"
        else:
            loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p)) or "(event)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def _is_union_tag(part: object) -> bool:
    # Discriminated unions put the tag ('training.requested') into the location path.
    return isinstance(part, str) and part in EVENT_TYPES


def decode_event(raw: bytes | str, *, expected: tuple[type[Event], ...] | None = None) -> Event:
    """Parse and validate one event from JSON; raise `InvalidEventError` naming the bad field.

    `expected` restricts which event types this consumer accepts.
    """
    try:
        event = _ANY_EVENT.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise InvalidEventError(describe_validation_error(exc), code=_error_code(exc)) from exc
    if expected is not None and not isinstance(event, expected):
        names = ", ".join(sorted(c.model_fields["event_type"].default for c in expected))
        raise InvalidEventError(
            f"event_type: {event.event_type!r} is not accepted here (expected {names})",
            code="unexpected_event_type",
        )
    return event


def _error_code(exc: ValidationError) -> str:
    kinds = {err["type"] for err in exc.errors(include_url=False)}
    if "json_invalid" in kinds or "json_type" in kinds:
        return "invalid_json"
    if "union_tag_invalid" in kinds or "union_tag_not_found" in kinds:
        return "unknown_event_type"
    return "schema"
