"""Prometheus metrics of the service loop, on an explicit registry per app.

Every metric a service exposes is named `driftloop_<service>_…` (the service name with
`-` as `_`). A service declares its domain metrics as class attributes of a `MetricSet`
(one line each: `trainings = counter("trainings_total", "…", "model_key")`); an instance
makes them on the service's `LoopMetrics`, so they share its prefix and registry.
Label values come from small fixed sets (status, reason code, topic): never an id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)


def metric_prefix(service: str) -> str:
    """`driftloop_<service>`, the service name with `-` and `.` as `_`."""
    return "driftloop_" + service.replace("-", "_").replace(".", "_")


class Declared(Generic[M]):
    """One metric declared on a `MetricSet` class; each instance of the set makes its own."""

    def __init__(
        self,
        kind: Callable[..., M],
        name: str,
        documentation: str,
        labels: Sequence[str],
        **extra: Any,
    ) -> None:
        self.kind, self.name, self.documentation = kind, name, documentation
        self.labels, self.extra = tuple(labels), extra

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    @overload
    def __get__(self, instance: None, owner: type) -> Declared[M]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> M: ...
    def __get__(self, instance: object | None, owner: type) -> Declared[M] | M:
        if instance is None:
            return self
        made: M = instance.__dict__[self.attribute]
        return made

    def make(self, metrics: LoopMetrics) -> M:
        return self.kind(
            metrics.name(self.name),
            self.documentation,
            self.labels,
            registry=metrics.registry,
            **self.extra,
        )


def counter(name: str, documentation: str, *labels: str) -> Declared[Counter]:
    return Declared(Counter, name, documentation, labels)


def gauge(name: str, documentation: str, *labels: str) -> Declared[Gauge]:
    return Declared(Gauge, name, documentation, labels)


def histogram(
    name: str,
    documentation: str,
    *labels: str,
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
) -> Declared[Histogram]:
    return Declared(Histogram, name, documentation, labels, buckets=buckets)


class MetricSet:
    """A group of declared metrics, made on one service's `LoopMetrics` (`self.loop`)."""

    def __init__(self, metrics: LoopMetrics) -> None:
        self.loop = metrics
        self._counted: dict[Counter, float] = {}  # what `catch_up` last brought each child to
        make_declared(self, metrics)

    def catch_up(self, child: Counter, total: float) -> None:
        """Bring a labelled counter up to a running `total` its domain object keeps, so the
        domain code counts in plain numbers and knows nothing of Prometheus."""
        counted = self._counted.get(child, 0)
        if total > counted:
            child.inc(total - counted)
            self._counted[child] = total


def make_declared(target: object, metrics: LoopMetrics) -> None:
    """Make every metric declared on `target`'s class (and its bases) on `metrics`."""
    for cls in reversed(type(target).__mro__):
        for attribute, declared in vars(cls).items():
            if isinstance(declared, Declared):
                target.__dict__[attribute] = declared.make(metrics)


class LoopMetrics:
    """The loop's own metrics and the registry and prefix every `MetricSet` of the service uses."""

    received = counter("messages_received_total", "Messages read from Kafka.", "topic")
    processed = counter(
        "messages_processed_total",
        "Messages fully handled and committed, by outcome (ok, dlq).",
        "topic",
        "status",
    )
    dead_lettered = counter(
        "dlq_messages_total",
        "Messages sent to a dead-letter topic, by reason code.",
        "topic",
        "reason",
    )
    processing_seconds = histogram(
        "processing_seconds",
        "Time from reading a message to having published its outputs.",
        "topic",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
    exceptions = counter("exceptions_total", "Exceptions raised while handling, by type.", "type")
    published = counter("published_total", "Events published, by topic.", "topic")
    consumer_lag = gauge(
        "consumer_lag", "Records behind the partition's high watermark.", "topic", "partition"
    )
    heartbeat = gauge("heartbeat_timestamp_seconds", "Last time the loop polled Kafka.")

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.prefix = metric_prefix(service)
        make_declared(self, self)

    def name(self, name: str) -> str:
        """The full name of one of this service's metrics: `driftloop_<service>_<name>`."""
        return f"{self.prefix}_{name}"
