"""The runtime every service runs on: the service contract and loop, the Kafka adapter,
the HTTP app, metrics, logs and settings. Only `kafka` and `loop` import aiokafka."""

from driftloop_common.runtime.app import create_app
from driftloop_common.runtime.logs import configure_logging
from driftloop_common.runtime.loop import LoopState, RetryPolicy, ServiceLoop
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.service import Service, ServiceBase, run_service, serve
from driftloop_common.runtime.settings import (
    GenesysSettings,
    KafkaSettings,
    MlflowSettings,
    ServiceSettings,
    load_settings,
)

__all__ = [
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
]
