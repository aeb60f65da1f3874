"""Request bodies, validated as Genesys validates them (a bad body is a 400 with details).

Field names are the wire's own (camelCase). Read-only fields a client echoes back
(`id`, `domain`, `dateCreated`…) are ignored, as the real API ignores them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftloop_simulator.settings import FaultSettings


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Segment(Body):
    text: str
    entity: dict[str, Any] | None = None  # {name} of the entity this segment marks


class Utterance(Body):
    id: str | None = None
    segments: list[Segment] = Field(min_length=1)

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)


class Intent(Body):
    id: str | None = None
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    entityNameReferences: list[str] | None = None
    utterances: list[Utterance] = Field(default_factory=list)


class VersionBody(Body):
    """An `NluDomainVersion` as POSTed or PUT: `language` is required."""

    description: str | None = None
    language: str = Field(min_length=2, max_length=35)
    intents: list[Intent] = Field(default_factory=list)
    entityTypes: list[dict[str, Any]] = Field(default_factory=list)
    entities: list[dict[str, Any]] = Field(default_factory=list)


class DomainBody(Body):
    name: str = Field(min_length=1, max_length=256)
    language: str = Field(min_length=2, max_length=35)
    description: str | None = None


class DetectionInput(Body):
    text: str
    language: str | None = None


class DetectBody(Body):
    input: DetectionInput


class TrainingDataBody(BaseModel):
    """A chunk of interactions for the model-config API; other fields are kept and echoed
    (e.g. a client's own chunk key, so a resumed upload can find what it sent)."""

    model_config = ConfigDict(extra="allow")

    modelId: str | None = None
    interactions: list[dict[str, Any]]


class ModelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trainingDataId: str | None = None
    status: Literal["ACTIVE", "INACTIVE"] | None = None
    version: str | int | None = None


class AdminDomain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str | None = None
    language: str | None = None


class AdminModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str | None = None


class FaultUpdate(BaseModel):
    """`POST /admin/faults`: the fields given replace the current ones; `expire_tokens`
    invalidates every token issued so far (the next API call with one answers 401)."""

    model_config = ConfigDict(extra="forbid")

    error_burst: int | None = Field(default=None, ge=0)
    error_status: int | None = Field(default=None, ge=500, le=599)
    slow_s: float | None = Field(default=None, ge=0, le=600)
    storm_429: int | None = Field(default=None, ge=0)
    storm_retry_after_s: int | None = Field(default=None, ge=0, le=3600)
    fail_next_training: bool | None = None
    expire_tokens: bool = False

    def changes(self) -> dict[str, Any]:
        given = self.model_dump(exclude_none=True, exclude={"expire_tokens"})
        return {k: v for k, v in given.items() if k in FaultSettings.model_fields}
