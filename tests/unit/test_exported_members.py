"""Pins the public API of driftloop_common's layers: a change here is a deliberate decision."""

import importlib

import pytest

PUBLIC_API = {
    "driftloop_common": [
        "ConfigError",
        "DriftloopError",
        "EVENT_TYPES",
        "Event",
        "InvalidEventError",
        "ModelKey",
        "ModelType",
        "PermanentError",
        "RetryableError",
        "SCHEMA_VERSION",
        "decode_event",
    ],
    "driftloop_common.runtime": [
        "GenesysSettings",
        "KafkaSettings",
        "LoopMetrics",
        "LoopState",
        "MlflowSettings",
        "RetryPolicy",
        "Service",
        "ServiceBase",
        "ServiceLoop",
        "ServiceSettings",
        "configure_logging",
        "create_app",
        "load_settings",
        "run_service",
        "serve",
    ],
}
PUBLIC_API["driftloop_common.contracts"] = PUBLIC_API["driftloop_common"]


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_public_api_is_pinned(module: str) -> None:
    assert sorted(importlib.import_module(module).__all__) == sorted(PUBLIC_API[module])


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_every_exported_name_exists(module: str) -> None:
    package = importlib.import_module(module)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
