"""Pins the public API of driftloop_common: a change here is a deliberate decision."""

import driftloop_common


def test_public_api_is_pinned() -> None:
    assert sorted(driftloop_common.__all__) == [
        "ConfigError",
        "DriftloopError",
        "EVENT_TYPES",
        "Event",
        "GenesysSettings",
        "InvalidEventError",
        "KafkaSettings",
        "LoopMetrics",
        "LoopState",
        "MlflowSettings",
        "ModelKey",
        "ModelType",
        "PermanentError",
        "RetryPolicy",
        "RetryableError",
        "SCHEMA_VERSION",
        "ServiceLoop",
        "ServiceSettings",
        "configure_logging",
        "create_app",
        "decode_event",
        "load_settings",
    ]


def test_every_exported_name_exists() -> None:
    for name in driftloop_common.__all__:
        assert getattr(driftloop_common, name) is not None, name
