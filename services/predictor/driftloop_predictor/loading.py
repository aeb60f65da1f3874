"""Versions from the MLflow registry: the champion alias and `models:/name/version`."""

from __future__ import annotations

from typing import Any

import mlflow

from driftloop_common.runtime.settings import MlflowSettings
from driftloop_common.storage import registry
from driftloop_predictor.models import StagedVersion

__all__ = ["MlflowLoader"]


class MlflowLoader:
    def __init__(self, settings: MlflowSettings) -> None:
        self.uri = settings.tracking_uri
        self.client = registry.client(self.uri, settings.registry_uri)
        mlflow.set_tracking_uri(self.uri)  # `models:/` URIs resolve through it
        if settings.registry_uri:
            mlflow.set_registry_uri(settings.registry_uri)

    def champion(self, name: str) -> int | None:
        version = registry.version_by_alias(self.client, name, registry.CHAMPION)
        return None if version is None else int(version.version)

    def staged(self, name: str) -> StagedVersion | None:
        """The version behind alias `shadow` or `canary` (the promoter sets one at a time)."""
        for stage in ("canary", "shadow"):
            version = registry.version_by_alias(self.client, name, stage)
            if version is not None:
                share = float(version.tags.get(registry.Tag.STAGE_SHARE, "0") or 0)
                return StagedVersion(stage, int(version.version), share)
        return None

    def load(self, name: str, version: int) -> Any:
        return registry.load_version(self.uri, name, version)
