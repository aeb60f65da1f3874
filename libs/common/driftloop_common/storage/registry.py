"""driftloop's conventions on the MLflow model registry, in one place.

- One registered model per model key, named `ModelKey.registered_model` (`intent-en-us`).
- The live version carries the alias `champion`; the newest trained candidate `challenger`.
  Stages are deprecated in MLflow and never used.
- Every version carries `driftloop.*` tags (below): its semantic version, the request that
  made it, its family, encoder and label set, so a version explains itself without the run.
- One MLflow experiment per model key, named like the registered model.

MLflow's errors are translated here (`mlflow_error`) into driftloop's tree, and their text
never carries a password: MLflow quotes the request URL, credentials included.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from driftloop_common.contracts.errors import DriftloopError, PermanentError, RetryableError
from driftloop_common.runtime.logs import MASK, mask, safe_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
STAGE_ALIASES = ("shadow", "canary")  # a staged promotion's version holds one of these


class Tag:
    """Tag names on runs and model versions."""

    MODEL_KEY = "driftloop.model_key"
    REQUEST = "driftloop.request_event_id"
    CORRELATION = "driftloop.correlation_id"
    REASON = "driftloop.reason"
    SEMVER = "driftloop.semver"
    VERSION = "driftloop.version"  # on a run: the model version registered from it
    # On a run (deleted) that trained a request another run had already made a version for.
    DUPLICATE_OF = "driftloop.duplicate_of"
    FAMILY = "driftloop.family"
    ENCODER = "driftloop.encoder"
    LABELS = "driftloop.labels"  # JSON list: the label set (classes or feature names)
    CONFIDENCE = "driftloop.confidence"  # mean confidence measured by the evaluator
    EVALUATION = "driftloop.evaluation"  # passed / failed
    # Set by the promoter: the live one is `champion`, those it replaced `inactive` (never
    # deleted), one taken back `rolled_back` (never promoted again on its own).
    STATUS = "driftloop.status"
    PREVIOUS_CHAMPION = "driftloop.previous_champion"  # on a champion: the version it replaced
    PROMOTED_AT = "driftloop.promoted_at"
    ROLLED_BACK_TO = "driftloop.rolled_back_to"  # on a rolled-back version
    # A staged promotion (shadow → canary → champion), on the staged version: its stage
    # (`shadow`, `canary`, `ended` once it became champion or was rolled back), since when,
    # a canary's share, and the evaluation it came from (JSON: ids and reference numbers).
    STAGE = "driftloop.stage"
    STAGE_SINCE = "driftloop.stage_since"
    STAGE_SHARE = "driftloop.stage_share"
    STAGE_EVALUATION = "driftloop.stage_evaluation"
    STAGE_ROLLED_BACK = "driftloop.stage_rolled_back"  # the stage a rollback ended

    @staticmethod
    def target(target: str, attempt: str, name: str) -> str:
        """A deploy target's note on a version, for one promotion attempt (the event that
        asked for it, hashed short): `driftloop.target.genesys-nlu.1a2b3c4d5e.draft_version_id`."""
        digest = hashlib.sha256(attempt.encode()).hexdigest()[:10]
        return f"driftloop.target.{target}.{digest}.{name}"

    @staticmethod
    def is_target(tag: str, target: str, name: str) -> bool:
        """Whether `tag` is a note of `target` named `name`, by any attempt."""
        head, tail = f"driftloop.target.{target}.", f".{name}"
        return (
            tag.startswith(head) and tag.endswith(tail) and "." not in tag[len(head) : -len(tail)]
        )


@dataclass(frozen=True)
class VersionFacts:
    """What decides the semantic version: family, encoder, and labels (or features)."""

    family: str
    encoder: str
    labels: frozenset[str]

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> VersionFacts | None:
        try:
            return cls(
                family=tags[Tag.FAMILY],
                encoder=tags[Tag.ENCODER],
                labels=frozenset(json.loads(tags[Tag.LABELS])),
            )
        except (KeyError, ValueError):
            return None

    def tags(self) -> dict[str, str]:
        return {
            Tag.FAMILY: self.family,
            Tag.ENCODER: self.encoder,
            Tag.LABELS: json.dumps(sorted(self.labels)),
        }


_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def next_semver(previous: str | None, before: VersionFacts | None, now: VersionFacts) -> str:
    """The semantic version of a new model version.

    major: family or encoder changed, or labels were removed (callers' outputs break);
    minor: labels added; patch: the same labels on newer data. The first version is 1.0.0.
    """
    if previous is None or before is None or not (match := _SEMVER.match(previous)):
        return "1.0.0"
    major, minor, patch = (int(part) for part in match.groups())
    if now.family != before.family or now.encoder != before.encoder:
        return f"{major + 1}.0.0"
    if not before.labels <= now.labels:
        return f"{major + 1}.0.0"
    if now.labels - before.labels:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")

# Statuses of MLflow errors that say nothing about the request's content: the server or
# the network (5xx, timeouts), a limit or a conflict (429, 408, 409, 499), or this service's
# own credentials (401, 403). MLflow reports a refused connection as 500 (INTERNAL_ERROR),
# and a 404 that names no resource (a wrong URI, a proxy) as ENDPOINT_NOT_FOUND.
_RETRYABLE_STATUS = frozenset({401, 403, 408, 409, 429, 499})


def scrub(text: str) -> str:
    """`text` with the password of every URI in it masked, and every secret the logs know."""
    return mask(_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text))


def mlflow_error(
    exc: Exception, doing: str, *, uri: str, missing: str = "not_found"
) -> DriftloopError:
    """An MLflow (or network) error as driftloop's: raise the result `from exc`.

    - the thing asked for does not exist (`RESOURCE_DOES_NOT_EXIST`): `PermanentError`
      with the code `missing` (`version_not_found`): the input names what is not there;
    - 5xx (a refused connection and a timeout among them), 401/403/408/409/429, a 404
      that names no resource, and any error that is not MLflow's (an `OSError` from the
      artifact store): `RetryableError`;
    - any other 4xx (MLflow refuses the request as malformed): `PermanentError`.
    """
    from mlflow.exceptions import MlflowException

    text = f"{doing}: MLflow at {safe_uri(uri)}: {scrub(str(exc))}"
    if not isinstance(exc, MlflowException):
        return RetryableError(text)
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return PermanentError(text, code=missing)
    status = exc.get_http_status_code()
    if status >= 500 or status in _RETRYABLE_STATUS or exc.error_code == "ENDPOINT_NOT_FOUND":
        return RetryableError(text)
    return PermanentError(text, code="mlflow_rejected")


@contextmanager
def translated(doing: str, *, uri: str, missing: str = "not_found") -> Iterator[None]:
    """Run a block of MLflow calls with their errors translated by `mlflow_error`."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        raise mlflow_error(exc, doing, uri=uri, missing=missing) from exc


def client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    # Services log as JSON lines: MLflow's tqdm bars would interleave with them. A version
    # pins its requirements; the project's uv.lock is not copied into every version.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOG_UV_FILES", "false")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def load_version(tracking_uri: str, name: str, version: str | int) -> Any:
    """The Python model of `models:/name/version` (`mlflow.set_tracking_uri` done by the
    caller), its errors translated; a version pickled against code this release no longer
    has is a permanent `unloadable_version`."""
    import mlflow.pyfunc

    with translated(f"loading {name} v{version}", uri=tracking_uri, missing="version_not_found"):
        try:
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        except ImportError as exc:
            raise PermanentError(
                f"{name} v{version} cannot be loaded by this release: {exc}",
                code="unloadable_version",
            ) from exc
    return loaded.unwrap_python_model()


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise mlflow_error(
            exc, f"cannot read alias {alias} of {name}", uri=client.tracking_uri
        ) from exc


def versions(client: MlflowClient, name: str, **tags: str) -> list[ModelVersion]:
    """Versions of `name` whose tags have the given values, newest first."""
    clauses = [f"name = '{_quote(name)}'"]
    clauses += [f"tags.`{tag}` = '{_quote(value)}'" for tag, value in tags.items()]
    found = client.search_model_versions(" AND ".join(clauses))
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def staged_versions(client: MlflowClient) -> list[ModelVersion]:
    """Versions of every registered model now in a stage (`shadow` or `canary`)."""
    found = [
        version
        for stage in STAGE_ALIASES
        for version in client.search_model_versions(f"tags.`{Tag.STAGE}` = '{stage}'")
    ]
    return sorted(found, key=lambda v: (v.name, int(v.version)))


def version_for_request(client: MlflowClient, name: str, request_id: str) -> ModelVersion | None:
    """The version a training request already produced (a redelivered request must not
    train twice). Two members that trained one request at once may both have registered:
    the oldest version is the request's, the one every member publishes."""
    found = versions(client, name, **{Tag.REQUEST: request_id})
    return found[-1] if found else None


def latest_version(client: MlflowClient, name: str) -> ModelVersion | None:
    found = versions(client, name)
    return found[0] if found else None


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created on first use."""
    if (experiment := client.get_experiment_by_name(name)) is not None:
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name)
    except MlflowException:  # created by a concurrent trainer in between
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. /]")


def metric_name(prefix: str, label: str) -> str:
    """An MLflow-safe metric name for a per-label value (`test_f1.card_lost`)."""
    return f"{prefix}.{_UNSAFE.sub('_', label)}"


def labels_of(version: ModelVersion) -> list[str]:
    try:
        return list(json.loads(version.tags.get(Tag.LABELS, "[]")))
    except ValueError:
        return []


def _quote(value: str) -> str:
    return value.replace("'", "''")
