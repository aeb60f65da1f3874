"""Versions from the MLflow registry: the champion alias and `models:/name/version`."""

from __future__ import annotations

from typing import Any

import mlflow
import mlflow.pyfunc

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_common.storage import registry

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

    def load(self, name: str, version: int) -> Any:
        with registry.translated(
            f"loading {name} v{version}", uri=self.uri, missing="version_not_found"
        ):
            try:
                loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
            except ImportError as exc:  # pickled against code this release no longer has
                raise PermanentError(
                    f"{name} v{version} cannot be loaded by this release: {exc}",
                    code="unloadable_version",
                ) from exc
        return loaded.unwrap_python_model()
