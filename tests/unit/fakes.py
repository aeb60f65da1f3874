"""In-memory stand-ins for aiokafka's consumer and producer (unit tests only).

They share a `journal` so a test can assert the order of produce and commit calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0
    timestamp_type: int = 0  # the producer's time (CreateTime)


class FakeConsumer:
    def __init__(self, journal: list, batches: list[list[FakeRecord]]) -> None:
        self.journal = journal
        self.batches = list(batches)
        self.committed: dict[TopicPartition, int] = {}
        self.metadata: dict[TopicPartition, str] = {}  # what Kafka keeps with each offset
        self._assignment: set[TopicPartition] = set()
        self.on_empty: Any = None  # called when no batches are left (e.g. loop.stop)
        self.poll_timeouts_ms: list[int] = []

    async def start(self) -> None:
        self.journal.append(("consumer.start",))

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._assignment = {TopicPartition(r.topic, r.partition) for b in self.batches for r in b}
        self.listener = listener

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.poll_timeouts_ms.append(timeout_ms)
        if not hasattr(self, "_joined"):
            self._joined = True
            await self.listener.on_partitions_assigned(set(self._assignment))
        if not self.batches:
            if self.on_empty:
                self.on_empty()
            await asyncio.sleep(0)
            return {}
        batch: dict[TopicPartition, list[FakeRecord]] = {}
        for record in self.batches.pop(0):
            batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return batch

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        """Like aiokafka: `{tp: offset}` or `{tp: (offset, metadata)}`; a plain offset
        commits empty metadata."""
        self.journal.append(("commit", dict(offsets)))
        for tp, value in offsets.items():
            offset, metadata = value if isinstance(value, tuple) else (value, "")
            self.committed[tp] = offset
            self.metadata[tp] = metadata

    async def committed_metadata(self, partitions: Any) -> dict[TopicPartition, tuple[int, str]]:
        return {
            tp: (self.committed[tp], self.metadata[tp]) for tp in partitions if tp in self.committed
        }

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def highwater(self, tp: TopicPartition) -> int | None:
        return 10

    async def stop(self) -> None:
        self.journal.append(("consumer.stop",))


class FakeProducer:
    def __init__(self, journal: list, fail_times: int = 0) -> None:
        self.journal = journal
        self.sent: list[tuple[str, bytes, bytes | None, list]] = []
        self.fail_times = fail_times

    async def start(self) -> None:
        self.journal.append(("producer.start",))

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None
    ) -> asyncio.Future:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        if self.fail_times > 0:
            from aiokafka.errors import KafkaConnectionError

            self.fail_times -= 1
            future.set_exception(KafkaConnectionError("broker unreachable"))
            return future
        self.sent.append((topic, value, key, headers or []))
        self.journal.append(("send", topic))
        future.set_result(None)
        return future

    async def stop(self) -> None:
        self.journal.append(("producer.stop",))
