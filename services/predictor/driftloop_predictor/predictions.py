"""`prediction` events, produced off the request path.

The service contract gives a service no producer: the loop publishes what `flush`
returns after every poll. So a request only appends a small record to a bounded queue
(no pydantic, no I/O); `drain` turns up to `limit` of them into `PredictionEvent`s for the
next flush. Beyond `capacity` the oldest records are dropped and counted: a Kafka outage
costs events, never memory or latency. No text is kept.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from driftloop_common.contracts.events import ModelKey, Prediction, PredictionEvent, Stage

__all__ = ["SERVED_BY", "PendingPredictions"]

SERVED_BY = "predictor"


@dataclass(frozen=True)
class _Record:
    key: ModelKey
    version: int
    label: str
    confidence: float
    conversation_id: str | None
    at: datetime
    stage: Stage


class PendingPredictions:
    def __init__(self, capacity: int) -> None:
        self._records: deque[_Record] = deque(maxlen=capacity)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._records)

    def add(
        self,
        key: ModelKey,
        version: int,
        labels: list[str],
        confidences: list[float],
        conversation_id: str | None,
        stage: Stage = "champion",
    ) -> int:
        """Queue one record per prediction; returns how many older ones were dropped."""
        at = datetime.now(UTC)
        room = self._records.maxlen or 0
        dropped = max(0, len(self._records) + len(labels) - room)
        self._records.extend(
            _Record(key, version, label, confidence, conversation_id, at, stage)
            for label, confidence in zip(labels, confidences, strict=True)
        )
        self.dropped += dropped
        return dropped

    def drain(self, limit: int) -> list[PredictionEvent]:
        events = []
        for _ in range(min(limit, len(self._records))):
            r = self._records.popleft()
            events.append(
                PredictionEvent(
                    producer=SERVED_BY,
                    model_key=r.key,
                    occurred_at=r.at,
                    payload=Prediction(
                        version=r.version,
                        label=r.label,
                        confidence=r.confidence,
                        served_by=SERVED_BY,
                        conversation_id=r.conversation_id,
                        stage=r.stage,
                    ),
                )
            )
        return events
