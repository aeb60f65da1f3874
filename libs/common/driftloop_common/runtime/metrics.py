"""Prometheus metrics of the service loop, on an explicit registry per app.

Every metric a service exposes is named `driftloop_<service>_…` (the service name with
`-` as `_`): the loop's own below, and the service's domain metrics, made through
`LoopMetrics.counter` / `gauge` / `histogram` so they share the prefix and the registry.
Label values come from small fixed sets (status, reason code, topic): never an id.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def metric_prefix(service: str) -> str:
    """`driftloop_<service>`, the service name with `-` and `.` as `_`."""
    return "driftloop_" + service.replace("-", "_").replace(".", "_")


class LoopMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.prefix = metric_prefix(service)
        self.received = self.counter(
            "messages_received_total", "Messages read from Kafka.", ["topic"]
        )
        self.processed = self.counter(
            "messages_processed_total",
            "Messages fully handled and committed, by outcome (ok, dlq).",
            ["topic", "status"],
        )
        self.dead_lettered = self.counter(
            "dlq_messages_total",
            "Messages sent to a dead-letter topic, by reason code.",
            ["topic", "reason"],
        )
        self.processing_seconds = self.histogram(
            "processing_seconds",
            "Time from reading a message to having published its outputs.",
            ["topic"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.exceptions = self.counter(
            "exceptions_total", "Exceptions raised while handling, by type.", ["type"]
        )
        self.published = self.counter("published_total", "Events published, by topic.", ["topic"])
        self.consumer_lag = self.gauge(
            "consumer_lag", "Records behind the partition's high watermark.", ["topic", "partition"]
        )
        self.heartbeat = self.gauge(
            "heartbeat_timestamp_seconds", "Last time the loop polled Kafka."
        )

    def name(self, name: str) -> str:
        """The full name of one of this service's metrics: `driftloop_<service>_<name>`."""
        return f"{self.prefix}_{name}"

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self.name(name), documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(self.name(name), documentation, labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        return Histogram(
            self.name(name), documentation, labels, registry=self.registry, buckets=buckets
        )
