"""Prometheus metrics of the service loop, on an explicit registry per app.

Names follow `<service>_…` (the service name with `-` as `_`); label values come from
small fixed sets (status, reason code, topic): never an id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def metric_prefix(service: str) -> str:
    return service.replace("-", "_").replace(".", "_")


class LoopMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        p = metric_prefix(service)
        r = self.registry
        self.received = Counter(
            f"{p}_messages_received_total", "Messages read from Kafka.", ["topic"], registry=r
        )
        self.processed = Counter(
            f"{p}_messages_processed_total",
            "Messages fully handled and committed, by outcome (ok, dlq).",
            ["topic", "status"],
            registry=r,
        )
        self.dead_lettered = Counter(
            f"{p}_dlq_messages_total",
            "Messages sent to a dead-letter topic, by reason code.",
            ["topic", "reason"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            f"{p}_processing_seconds",
            "Time from reading a message to having published its outputs.",
            ["topic"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.exceptions = Counter(
            f"{p}_exceptions_total",
            "Exceptions raised while handling, by type.",
            ["type"],
            registry=r,
        )
        self.published = Counter(
            f"{p}_published_total", "Events published, by topic.", ["topic"], registry=r
        )
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag",
            "Records behind the partition's high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.heartbeat = Gauge(
            f"{p}_heartbeat_timestamp_seconds", "Last time the loop polled Kafka.", registry=r
        )
