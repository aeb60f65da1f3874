"""The Genesys Cloud bodies the promoter sends and reads, with the API's camelCase names.

Fields are snake_case in Python and camelCase on the wire (`training_status` ↔
`trainingStatus`); either name is accepted. Fields this module does not name are kept as they
came (`extra="allow"`) and sent back: a version read, changed and PUT loses nothing.

- NLU domain API (`/api/v2/languageunderstanding/domains/{domainId}/versions…`): the real
  public API, after Genesys's SDK models (`NluDomainVersion`, its quality report, detection).
- Model-config API (`/api/v2/ml/trainingdata`, `/api/v2/ml/models/{modelId}`): the contract of
  the integration guide this project started from. Genesys's public API has no such
  endpoints; they serve platforms (and the simulator) that expose that contract.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

TrainingStatus = Literal["Untrained", "Training", "Trained", "Error", "Unknown"]
EvaluationStatus = Literal["Unevaluated", "Evaluating", "Evaluated", "Error"]


class GenesysModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_body(self) -> dict[str, Any]:
        """The JSON body as the API takes it: camelCase, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------- NLU domain versions


class NluSegmentEntity(GenesysModel):
    name: str


class NluSegment(GenesysModel):
    text: str
    entity: NluSegmentEntity | None = None


class NluUtterance(GenesysModel):
    id: str | None = None
    segments: list[NluSegment]

    @classmethod
    def of(cls, text: str) -> NluUtterance:
        """An utterance of one plain segment (no entity)."""
        return cls(segments=[NluSegment(text=text)])

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)


class NluIntent(GenesysModel):
    name: str
    description: str | None = None
    utterances: list[NluUtterance] = []


class NluDomainRef(GenesysModel):
    id: str | None = None
    name: str | None = None
    self_uri: str | None = None


class NluDomainVersion(GenesysModel):
    """`NluDomainVersion`: a domain's draft or published version (published: immutable)."""

    id: str | None = None
    domain: NluDomainRef | None = None
    description: str | None = None
    language: str  # e.g. "en-us"
    published: bool | None = None
    date_created: datetime | None = None
    date_modified: datetime | None = None
    date_trained: datetime | None = None
    date_published: datetime | None = None
    training_status: TrainingStatus | None = None
    evaluation_status: EvaluationStatus | None = None
    intents: list[NluIntent] = []
    entity_types: list[dict[str, Any]] = []
    entities: list[dict[str, Any]] = []
    self_uri: str | None = None


class NluDomainVersionListing(GenesysModel):
    """One page of `GET …/versions`."""

    entities: list[NluDomainVersion] = []
    page_size: int | None = None
    page_number: int | None = None
    total: int | None = None
    page_count: int | None = None
    next_uri: str | None = None


class NluTrainResponse(GenesysModel):
    """`POST …/versions/{versionId}/train` (202): training has started."""

    message: str | None = None
    version: NluDomainVersion


class DetectedIntent(GenesysModel):
    name: str
    probability: float
    entities: list[dict[str, Any]] = []


class NluDetectionOutput(GenesysModel):
    intents: list[DetectedIntent] = []


class NluDetectionResponse(GenesysModel):
    """`POST …/versions/{versionId}/detect`: `{output: {intents: [{name, probability}]}}`."""

    output: NluDetectionOutput = Field(default_factory=NluDetectionOutput)


class ConfusionCell(GenesysModel):
    name: str  # the predicted intent
    value: float


class ConfusionRow(GenesysModel):
    name: str  # the true intent
    columns: list[ConfusionCell] = []


class ReportMetric(GenesysModel):
    name: str
    value: float


class ReportSummary(GenesysModel):
    metrics: list[ReportMetric] = []


class NluReport(GenesysModel):
    """`GET …/versions/{versionId}/report`: the version's quality report."""

    confusion_matrix: list[ConfusionRow] = []
    summary: ReportSummary = Field(default_factory=ReportSummary)

    @property
    def metrics(self) -> dict[str, float]:
        """The summary's metrics by name (the simulator: `f1_score`, `precision`, `recall`…)."""
        return {metric.name: metric.value for metric in self.summary.metrics}

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)


# ---------------------------------------------------------------- model-config API


class TrainingDataCreated(GenesysModel):
    """`POST /api/v2/ml/trainingdata`: the id of the uploaded chunk (`trainingDataId` or `id`)."""

    training_data_id: str = Field(validation_alias=AliasChoices("trainingDataId", "id"))


class MlModel(GenesysModel):
    """`GET/PATCH /api/v2/ml/models/{modelId}`: which training data the model serves."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: str | None = None
    status: str | None = None  # e.g. ACTIVE
    version: str | None = None
    training_data_id: str | None = None
