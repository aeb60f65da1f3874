"""The simulator's in-memory world: tokens, NLU domains and versions, training data, models.

Time comes from an injected clock (seconds since the epoch), so tests move it by hand.
Training is lazy: `train` fits the model at once and records when it becomes ready; a
version read after that moment shows `Trained` (or `Error` when a fault said so). No
background task, so nothing races: every change here happens without an `await`, and on
one event loop that makes each method atomic.
"""

from __future__ import annotations

import enum
import math
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from driftloop_simulator.errors import bad_request, conflict, not_found
from driftloop_simulator.limits import Faults, RateLimiter, Stats
from driftloop_simulator.nlu import CentroidModel, Example, Report, evaluate
from driftloop_simulator.schemas import Intent, ModelPatch, TrainingDataBody, VersionBody
from driftloop_simulator.settings import SimulatorSettings

Clock = Callable[[], float]
NLU = "/api/v2/languageunderstanding/domains"
ML = "/api/v2/ml"


class TrainingStatus(enum.StrEnum):
    UNTRAINED = "Untrained"
    TRAINING = "Training"
    TRAINED = "Trained"
    ERROR = "Error"
    UNKNOWN = "Unknown"


class EvaluationStatus(enum.StrEnum):
    UNEVALUATED = "Unevaluated"
    EVALUATING = "Evaluating"
    EVALUATED = "Evaluated"
    ERROR = "Error"


def iso(t: float | None) -> str | None:
    """Genesys's dates: ISO 8601, UTC, milliseconds, `Z`."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}  # Genesys leaves nulls out


def page(
    items: Sequence[dict[str, Any]],
    *,
    path: str,
    page_number: int,
    page_size: int,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Genesys listing: `entities`, `pageSize`, `pageNumber`, `total`, `pageCount` and the
    relative `firstUri`/`selfUri`/`nextUri`/`previousUri`/`lastUri`."""
    total = len(items)
    page_count = max(1, math.ceil(total / page_size))

    def uri(n: int) -> str:
        return f"{path}?{urlencode({'pageSize': page_size, 'pageNumber': n, **(query or {})})}"

    start = (page_number - 1) * page_size
    return _compact(
        {
            "entities": list(items[start : start + page_size]),
            "pageSize": page_size,
            "pageNumber": page_number,
            "total": total,
            "pageCount": page_count,
            "firstUri": uri(1),
            "selfUri": uri(page_number),
            "lastUri": uri(page_count),
            "nextUri": uri(page_number + 1) if page_number < page_count else None,
            "previousUri": uri(page_number - 1) if page_number > 1 else None,
        }
    )


@dataclass
class Training:
    started_at: float
    ready_at: float
    fails: bool
    model: CentroidModel
    report: Report


@dataclass
class Version:
    id: str
    domain: Domain
    language: str
    description: str | None
    intents: list[Intent]
    entity_types: list[dict[str, Any]]
    entities: list[dict[str, Any]]
    date_created: float
    date_modified: float
    training_status: TrainingStatus = TrainingStatus.UNTRAINED
    evaluation_status: EvaluationStatus = EvaluationStatus.UNEVALUATED
    date_trained: float | None = None
    published: bool = False
    date_published: float | None = None
    training: Training | None = None

    @property
    def self_uri(self) -> str:
        return f"{NLU}/{self.domain.id}/versions/{self.id}"

    def examples(self) -> list[Example]:
        return [
            Example(text=u.text, intent=intent.name)
            for intent in self.intents
            for u in intent.utterances
            if u.text.strip()
        ]

    def settle(self, now: float) -> None:
        """Finish a training whose time has come."""
        t = self.training
        if self.training_status is not TrainingStatus.TRAINING or t is None or now < t.ready_at:
            return
        if t.fails:
            self.training_status = TrainingStatus.ERROR
            self.evaluation_status = EvaluationStatus.ERROR
        else:
            self.training_status = TrainingStatus.TRAINED
            self.evaluation_status = EvaluationStatus.EVALUATED
            self.date_trained = t.ready_at

    def to_wire(self, *, include_utterances: bool = True) -> dict[str, Any]:
        exclude = None if include_utterances else {"utterances"}
        return _compact(
            {
                "id": self.id,
                "domain": {
                    "id": self.domain.id,
                    "name": self.domain.name,
                    "selfUri": self.domain.self_uri,
                },
                "description": self.description,
                "language": self.language,
                "published": self.published,
                "dateCreated": iso(self.date_created),
                "dateModified": iso(self.date_modified),
                "dateTrained": iso(self.date_trained),
                "datePublished": iso(self.date_published),
                "trainingStatus": self.training_status.value,
                "evaluationStatus": self.evaluation_status.value,
                "intents": [i.model_dump(exclude_none=True, exclude=exclude) for i in self.intents],
                "entityTypes": self.entity_types,
                "entities": self.entities,
                "selfUri": self.self_uri,
            }
        )


@dataclass
class Domain:
    id: str
    name: str
    language: str
    description: str | None
    date_created: float
    date_modified: float
    versions: dict[str, Version] = field(default_factory=dict)  # in creation order
    last_published_id: str | None = None

    @property
    def self_uri(self) -> str:
        return f"{NLU}/{self.id}"

    def to_wire(self) -> dict[str, Any]:
        drafts = [v for v in self.versions.values() if not v.published]
        published = self.versions.get(self.last_published_id or "")
        return _compact(
            {
                "id": self.id,
                "name": self.name,
                "language": self.language,
                "description": self.description,
                "draftVersion": drafts[-1].to_wire(include_utterances=False) if drafts else None,
                "lastPublishedVersion": (
                    published.to_wire(include_utterances=False) if published else None
                ),
                "dateCreated": iso(self.date_created),
                "dateModified": iso(self.date_modified),
                "engineVersion": "simulator-bow-1",
                "selfUri": self.self_uri,
            }
        )


@dataclass
class TrainingData:
    id: str
    model_id: str | None
    interactions: list[dict[str, Any]]
    extra: dict[str, Any]
    date_created: float

    def to_wire(self, *, include_interactions: bool = True) -> dict[str, Any]:
        body = {
            **self.extra,
            "id": self.id,
            "modelId": self.model_id,
            "interactionCount": len(self.interactions),
            "dateCreated": iso(self.date_created),
            "selfUri": f"{ML}/trainingdata/{self.id}",
        }
        if include_interactions:
            body["interactions"] = self.interactions
        return _compact(body)


@dataclass
class MlModel:
    id: str
    name: str
    date_created: float
    date_modified: float
    status: str = "INACTIVE"
    training_data_id: str | None = None
    version: str | int | None = None

    def to_wire(self) -> dict[str, Any]:
        return _compact(
            {
                "id": self.id,
                "name": self.name,
                "status": self.status,
                "trainingDataId": self.training_data_id,
                "version": self.version,
                "dateCreated": iso(self.date_created),
                "dateModified": iso(self.date_modified),
                "selfUri": f"{ML}/models/{self.id}",
            }
        )


class Tokens:
    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}  # token → (client id, expires at)

    def issue(self, client_id: str, now: float, ttl_s: float) -> str:
        self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}  # drop expired
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (client_id, now + ttl_s)
        return token

    def client_of(self, token: str, now: float) -> str | None:
        found = self._tokens.get(token)
        return found[0] if found and found[1] > now else None

    def expire_all(self) -> None:
        self._tokens.clear()


class SimulatorState:
    def __init__(self, settings: SimulatorSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.credentials = settings.credentials()
        self.tokens = Tokens()
        self.limiter = RateLimiter(settings.rate_per_s, settings.burst)
        self.faults = Faults(settings.faults)
        self.stats = Stats()
        self.domains: dict[str, Domain] = {}
        self.training_data: dict[str, TrainingData] = {}
        self._by_chunk_key: dict[str, TrainingData] = {}  # a client's idempotency key → upload
        self.models: dict[str, MlModel] = {}
        for domain_id in settings.domains:
            self.create_domain(domain_id=domain_id)
        for model_id in settings.models:
            self.create_model(model_id=model_id)

    def now(self) -> float:
        return self.clock()

    # ----------------------------------------------------------------- domains
    def create_domain(
        self,
        *,
        domain_id: str | None = None,
        name: str | None = None,
        language: str | None = None,
        description: str | None = None,
    ) -> Domain:
        domain_id = domain_id or str(uuid.uuid4())
        if domain_id in self.domains:
            raise conflict(f"domain {domain_id} already exists", domain_id)
        now = self.now()
        domain = Domain(
            id=domain_id,
            name=name or f"domain-{domain_id[:8]}",
            language=language or self.settings.default_language,
            description=description,
            date_created=now,
            date_modified=now,
        )
        self.domains[domain_id] = domain
        return domain

    def domain(self, domain_id: str, *, language: str | None = None) -> Domain:
        found = self.domains.get(domain_id)
        if found is not None:
            return found
        if not self.settings.auto_create:
            raise not_found("NLU domain", domain_id)
        return self.create_domain(domain_id=domain_id, language=language)

    # ----------------------------------------------------------------- versions
    def version(self, domain_id: str, version_id: str) -> Version:
        found = self.domain(domain_id).versions.get(version_id)
        if found is None:
            raise not_found("NLU domain version", version_id)
        found.settle(self.now())
        return found

    def versions(self, domain_id: str) -> list[Version]:
        now = self.now()
        found = list(self.domain(domain_id).versions.values())
        for v in found:
            v.settle(now)
        return found

    def create_version(self, domain_id: str, body: VersionBody) -> Version:
        domain = self.domain(domain_id, language=body.language)
        now = self.now()
        version = Version(
            id=str(uuid.uuid4()),
            domain=domain,
            language=body.language,
            description=body.description,
            intents=_unique(body.intents),
            entity_types=body.entityTypes,
            entities=body.entities,
            date_created=now,
            date_modified=now,
        )
        domain.versions[version.id] = version
        domain.date_modified = now
        return version

    def update_version(self, domain_id: str, version_id: str, body: VersionBody) -> Version:
        version = self.version(domain_id, version_id)
        if version.published:
            raise conflict(f"version {version_id} is published and cannot be changed", version_id)
        if version.training_status is TrainingStatus.TRAINING:
            raise conflict(f"version {version_id} is training", version_id)
        version.language = body.language
        version.description = body.description
        version.intents = _unique(body.intents)
        version.entity_types = body.entityTypes
        version.entities = body.entities
        version.date_modified = self.now()
        version.training_status = TrainingStatus.UNTRAINED
        version.evaluation_status = EvaluationStatus.UNEVALUATED
        version.training = None
        version.date_trained = None
        return version

    def delete_version(self, domain_id: str, version_id: str) -> None:
        domain = self.domain(domain_id)
        self.version(domain_id, version_id)  # 404 when unknown
        del domain.versions[version_id]
        if domain.last_published_id == version_id:
            published = [v for v in domain.versions.values() if v.published]
            latest = max(published, key=lambda v: v.date_published or 0.0, default=None)
            domain.last_published_id = latest.id if latest else None

    def train(self, domain_id: str, version_id: str) -> Version:
        version = self.version(domain_id, version_id)
        if version.published:
            raise conflict(f"version {version_id} is published and cannot be trained", version_id)
        if version.training_status is TrainingStatus.TRAINING:
            raise conflict(f"version {version_id} is already training", version_id)
        examples = version.examples()
        if not examples:
            raise bad_request(f"version {version_id} has no utterances to train on", "intents")
        now = self.now()
        version.training = Training(
            started_at=now,
            ready_at=now + self.settings.training_delay_s,
            fails=self.faults.take_training_failure(),
            model=CentroidModel.fit(examples),
            report=evaluate(examples),
        )
        version.training_status = TrainingStatus.TRAINING
        version.evaluation_status = EvaluationStatus.EVALUATING
        version.date_trained = None
        version.settle(now)  # a zero delay finishes at once
        return version

    def trained(self, domain_id: str, version_id: str) -> Training:
        version = self.version(domain_id, version_id)
        if version.training_status is not TrainingStatus.TRAINED or version.training is None:
            raise conflict(
                f"version {version_id} is not trained (trainingStatus "
                f"{version.training_status.value})",
                version_id,
            )
        return version.training

    def publish(self, domain_id: str, version_id: str) -> Version:
        version = self.version(domain_id, version_id)
        if version.published:
            raise conflict(f"version {version_id} is already published", version_id)
        self.trained(domain_id, version_id)
        now = self.now()
        version.published = True
        version.date_published = now
        version.domain.last_published_id = version.id
        version.domain.date_modified = now
        return version

    # ----------------------------------------------------------------- model-config API
    def upload(self, body: TrainingDataBody) -> TrainingData:
        low, high = self.settings.min_chunk, self.settings.max_chunk
        if not low <= len(body.interactions) <= high:
            raise bad_request(
                f"a chunk holds {low}–{high} interactions, not {len(body.interactions)}",
                "interactions",
            )
        if body.modelId is not None:
            self.model(body.modelId)
        key = (body.model_extra or {}).get("chunkKey")
        if key is not None and (earlier := self._by_chunk_key.get(str(key))) is not None:
            self.stats.repeated_uploads += 1  # an idempotent retry: the same upload again
            return earlier
        data = TrainingData(
            id=str(uuid.uuid4()),
            model_id=body.modelId,
            interactions=body.interactions,
            extra=dict(body.model_extra or {}),
            date_created=self.now(),
        )
        self.training_data[data.id] = data
        if key is not None:
            self._by_chunk_key[str(key)] = data
        self.stats.uploads += 1
        self.stats.uploaded_interactions += len(data.interactions)
        return data

    def uploaded(self, training_data_id: str) -> TrainingData:
        found = self.training_data.get(training_data_id)
        if found is None:
            raise not_found("training data", training_data_id)
        return found

    def create_model(self, *, model_id: str | None = None, name: str | None = None) -> MlModel:
        model_id = model_id or str(uuid.uuid4())
        if model_id in self.models:
            raise conflict(f"model {model_id} already exists", model_id)
        now = self.now()
        model = MlModel(
            id=model_id, name=name or f"model-{model_id[:8]}", date_created=now, date_modified=now
        )
        self.models[model_id] = model
        return model

    def model(self, model_id: str) -> MlModel:
        found = self.models.get(model_id)
        if found is not None:
            return found
        if not self.settings.auto_create:
            raise not_found("model", model_id)
        return self.create_model(model_id=model_id)

    def patch_model(self, model_id: str, patch: ModelPatch) -> MlModel:
        model = self.model(model_id)
        given = patch.model_fields_set
        if "trainingDataId" in given and patch.trainingDataId is not None:
            if patch.trainingDataId not in self.training_data:
                raise bad_request(
                    f"no training data {patch.trainingDataId} was uploaded", "trainingDataId"
                )
            model.training_data_id = patch.trainingDataId
        elif "trainingDataId" in given:
            model.training_data_id = None
        if patch.status is not None:
            model.status = patch.status
        if "version" in given:
            model.version = patch.version
        model.date_modified = self.now()
        return model


def _unique(intents: list[Intent]) -> list[Intent]:
    seen: set[str] = set()
    for intent in intents:
        if intent.name in seen:
            raise bad_request(f"intent {intent.name!r} appears twice", "intents")
        seen.add(intent.name)
    return intents
