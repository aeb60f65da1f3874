"""A staged promotion: shadow → canary → champion, each stage as long as the settings say.

With `DRIFTLOOP_ROLLOUT__SHADOW_S` and/or `…__CANARY_S` above 0, a passed evaluation of a
model that has a champion does not replace it at once: the version takes the MLflow alias
`shadow` (the predictor scores every request with it too and never answers with it), then
`canary` (it answers `canary_percent` % of conversations, sticky by conversation id), then
the normal promotion runs on every target. The first version of a model has nothing to be
compared with and becomes champion at once.

Every stage lives on the version's tags (`driftloop.stage`, `…stage_since`,
`…stage_evaluation`), so a restarted promoter picks up where it was; the promoter's
`flush` moves a version to its next stage once its time is up. A `rollback.requested`
naming a staged version (`from_version`) ends its stage: the alias goes, the version is
tagged `rolled_back` and `model.rolled_back` names the stage it held; the champion never
moved.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from driftloop_common.contracts.events import (
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    Stage,
)

__all__ = ["ENDED", "RolloutOptions", "StagedFrom", "held_stage"]

ENDED = "ended"


def held_stage(tags: dict[str, str], tag: str) -> Stage | None:
    """The stage (`shadow` or `canary`) a version's tag names, else None."""
    value = tags.get(tag)
    return value if value in ("shadow", "canary") else None  # type: ignore[return-value]


class RolloutOptions(BaseModel):
    """`DRIFTLOOP_ROLLOUT__…`; both lengths 0 (the default): no stages."""

    model_config = ConfigDict(extra="forbid")

    shadow_s: float = Field(default=0.0, ge=0)
    canary_s: float = Field(default=0.0, ge=0)
    canary_percent: float = Field(default=10.0, gt=0, lt=100)
    check_s: float = Field(default=5.0, gt=0)  # how often the stages' clocks are read

    @property
    def staged(self) -> bool:
        return self.shadow_s > 0 or self.canary_s > 0

    def first(self) -> Stage:
        return self.after(None)

    def after(self, stage: Stage | None) -> Stage:
        """The stage that follows `stage` (None: the first), skipping those of length 0."""
        order: list[Stage] = ["shadow", "canary", "champion"]
        start = 0 if stage is None else order.index(stage) + 1
        for candidate in order[start:]:
            if candidate == "champion" or self.length(candidate) > 0:
                return candidate
        return "champion"

    def length(self, stage: Stage) -> float:
        return {"shadow": self.shadow_s, "canary": self.canary_s}.get(stage, 0.0)

    def share(self, stage: Stage) -> float | None:
        return self.canary_percent if stage == "canary" else None


@dataclass(frozen=True)
class StagedFrom:
    """The evaluation a staged version came from, kept on its tags: the final promotion is
    that evaluation's, with the same event ids as an unstaged one."""

    event_id: uuid.UUID
    correlation_id: uuid.UUID
    model_key: ModelKey
    metrics: dict[str, float]

    @classmethod
    def of(cls, event: ModelEvaluatedEvent) -> StagedFrom:
        keep = ("confidence", "challenger_accuracy")  # what the promoted event reports
        metrics = {k: v for k, v in event.payload.metrics.items() if k in keep}
        return cls(event.event_id, event.correlation_id, event.model_key, metrics)

    def to_tag(self) -> str:
        return json.dumps(
            {
                "event_id": str(self.event_id),
                "correlation_id": str(self.correlation_id),
                "model_key": str(self.model_key),
                "metrics": self.metrics,
            }
        )

    @classmethod
    def from_tag(cls, text: str) -> StagedFrom:
        data = json.loads(text)
        return cls(
            uuid.UUID(data["event_id"]),
            uuid.UUID(data["correlation_id"]),
            ModelKey.parse(data["model_key"]),
            {k: float(v) for k, v in data["metrics"].items()},
        )

    def evaluation(self, name: str, version: int, producer: str) -> ModelEvaluatedEvent:
        """The passed evaluation again, as the final promotion's cause."""
        return ModelEvaluatedEvent(
            event_id=self.event_id,
            correlation_id=self.correlation_id,
            producer=producer,
            model_key=self.model_key,
            payload=ModelEvaluated(
                registered_model=name, version=version, passed=True, metrics=self.metrics
            ),
        )
