"""Kafka topic names, in one place.

Every topic is keyed by model key (`intent/en-us`), so all events of one model
land in one partition, in order. Each topic `t` has a dead-letter topic `t.dlq`.
"""

from __future__ import annotations

from typing import Final

INTERACTIONS_RAW: Final = "interactions.raw"
INTERACTIONS_EMBEDDED: Final = "interactions.embedded"
DRIFT_DETECTED: Final = "drift.detected"
TRAINING_REQUESTED: Final = "training.requested"
TRAINING_FAILED: Final = "training.failed"
MODEL_TRAINED: Final = "model.trained"
MODEL_EVALUATED: Final = "model.evaluated"
MODEL_PROMOTED: Final = "model.promoted"
PROMOTION_FAILED: Final = "promotion.failed"
ROLLBACK_REQUESTED: Final = "rollback.requested"
MODEL_ROLLED_BACK: Final = "model.rolled_back"
PREDICTIONS: Final = "predictions"
AUDIT: Final = "audit"

ALL_TOPICS: Final[tuple[str, ...]] = (
    INTERACTIONS_RAW,
    INTERACTIONS_EMBEDDED,
    DRIFT_DETECTED,
    TRAINING_REQUESTED,
    TRAINING_FAILED,
    MODEL_TRAINED,
    MODEL_EVALUATED,
    MODEL_PROMOTED,
    PROMOTION_FAILED,
    ROLLBACK_REQUESTED,
    MODEL_ROLLED_BACK,
    PREDICTIONS,
    AUDIT,
)
"""Every topic: the `topic` of each class in `events.EVENT_CLASSES`, which import these
names, so this list is spelled out and tests/unit/test_events.py holds the two equal."""

TOPIC_CONFIGS: Final[dict[str, dict[str, str]]] = {
    # Records stamped with the broker's append time, which only grows along a partition:
    # the collector's waits for a conversation's pieces can then follow the log.
    INTERACTIONS_RAW: {"message.timestamp.type": "LogAppendTime"},
}
"""Per-topic settings `create_topics` gives the topics it creates."""

DLQ_SUFFIX: Final = ".dlq"


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX
