"""The runtime every service runs on: the service contract and loop, the Kafka adapter,
the HTTP app, metrics, logs and settings. Only `kafka` and `loop` import aiokafka.

The names below load their module on first use, so that importing one light module
(`runtime.settings`, `runtime.logs`) does not start the web and Kafka stacks.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "GenesysSettings": "settings",
    "KafkaSettings": "settings",
    "MlflowSettings": "settings",
    "ServiceSettings": "settings",
    "load_settings": "settings",
    "LoopMetrics": "metrics",
    "LoopState": "loop",
    "RetryPolicy": "loop",
    "ServiceLoop": "loop",
    "Service": "service",
    "ServiceBase": "service",
    "run_service": "service",
    "serve": "service",
    "configure_logging": "logs",
    "create_app": "app",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
