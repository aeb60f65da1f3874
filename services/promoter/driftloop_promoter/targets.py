"""Deploy targets behind one interface, and what they are handed.

A promotion runs in two phases so that a failure leaves the previous champion live
everywhere: `prepare` on every target (uploads, trainings, quality gates: nothing a caller
sees changes), then `activate` on every target (publish, PATCH ACTIVE); if an activation
fails, the targets already activated `activate` the previous champion again. Every step
writes what it did into the version's tags (`Promotion.note`) *before* the next one, so a
crash or a redelivery resumes where it stopped instead of uploading or publishing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import ModelKey
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


class DeployError(PermanentError):
    """A target refused this version for good (a training ended in Error, a quality gate, a
    4xx from its API): the promotion ends in `promotion.failed` naming the target."""

    code = "deploy_failed"

    def __init__(self, target: str, message: str) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.reason = message


@dataclass
class Promotion:
    """One attempt to put `version` live for `key`, replacing `previous` (None: the first
    champion). `attempt` is the id of the event that asked for it: a redelivery of that
    event finds the notes this attempt left on the version. `gated`: a target may refuse
    the version on its own quality checks (a promotion), or must put it back as it is (a
    rollback, or the champion restored after a failed promotion)."""

    key: ModelKey
    version: ModelVersion
    previous: ModelVersion | None
    attempt: str
    client: MlflowClient
    tracking_uri: str
    gated: bool = True

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def number(self) -> int:
        return int(self.version.version)

    def noted(self, target: str, name: str) -> str | None:
        """What `target` noted under `name` on this attempt, if it did."""
        return self.version.tags.get(Tag.target(target, self.attempt, name))

    def noted_by_any(self, target: str, name: str) -> str | None:
        """What any attempt of `target` noted under `name` on this version (the first one by
        tag name), e.g. the data an earlier promotion of it uploaded."""
        found = sorted(k for k in self.version.tags if Tag.is_target(k, target, name))
        return self.version.tags[found[0]] if found else None

    async def note(self, target: str, name: str, value: str) -> None:
        """Record a step on the version (MLflow is the record) before going on."""
        key = Tag.target(target, self.attempt, name)
        with registry.translated(f"tagging {self.name} v{self.number}", uri=self.tracking_uri):
            await asyncio.to_thread(
                self.client.set_model_version_tag, self.name, self.version.version, key, value
            )
        self.version.tags[key] = value


class Target(Protocol):
    """A place a version goes live. Every method is safe to call again after a crash."""

    name: str

    async def prepare(self, promotion: Promotion) -> None:
        """Everything before going live: uploads, a training, gates. Raises `DeployError`
        when this version must not go live here."""
        ...

    async def activate(self, promotion: Promotion) -> None:
        """Make the prepared version the live one on this target."""
        ...

    async def close(self) -> None: ...


class PredictorTarget:
    """Our own predictor serves the MLflow alias `champion`: the alias move that ends every
    promotion is the deployment, and the predictor reloads on `model.promoted`."""

    name = "predictor"

    async def prepare(self, promotion: Promotion) -> None:
        return None

    async def activate(self, promotion: Promotion) -> None:
        return None

    async def close(self) -> None:
        return None


def targets_for(key: ModelKey, configured: Mapping[str, list[str]]) -> list[str]:
    """The target names configured for `key`: its own entry (`intent/en-us`), else its
    model type's (`intent`), else the default (`*`)."""
    for pattern in (str(key), key.model_type.value, "*"):
        if pattern in configured:
            return configured[pattern]
    return ["predictor"]
