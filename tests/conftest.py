"""Fixtures every test folder may use: a real MLflow server for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from driftloop_local.mlflow import LocalMlflow


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server (SQLite + served artifacts), or `DRIFTLOOP_TEST_MLFLOW_URI`."""
    if external := os.environ.get("DRIFTLOOP_TEST_MLFLOW_URI"):
        yield external
        return
    server = LocalMlflow(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server.start(timeout_s=180)
    finally:
        server.stop()
