"""Per-record overhead of the service loop (decode → handle → publish → commit), no broker.

    .venv/bin/python bench/bench_loop.py [--records 20000]

In-memory fake clients isolate the loop's own cost from Kafka's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftloop_common.contracts.events import Audit, AuditEvent, Event
from driftloop_common.runtime.loop import ServiceLoop
from tests.unit.fakes import FakeConsumer, FakeProducer, FakeRecord


async def run_once(records: int, with_output: bool) -> float:
    batch = [FakeRecord("t", 0, i, b"x") for i in range(records)]
    journal: list = []
    consumer = FakeConsumer(journal, [batch[i : i + 500] for i in range(0, records, 500)])
    template = AuditEvent(
        producer="bench",
        model_key="intent/en-us",
        payload=Audit(action="a", actor="b", subject="c"),
    )

    async def handle(_: object) -> list[Event]:
        return [template] if with_output else []

    loop = ServiceLoop(
        service="bench",
        topics=["t"],
        decode=lambda r: r,
        handle=handle,
        consumer=consumer,
        producer=FakeProducer(journal),
    )
    consumer.on_empty = loop.stop
    started = time.perf_counter()
    await loop.run()
    return (time.perf_counter() - started) / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/bench_loop.py --records {args.records}\n")
    print(f"| handler returns | µs per record (median of {args.repeat}) |")
    print("|---|---:|")
    for with_output in (False, True):
        runs = [asyncio.run(run_once(args.records, with_output)) for _ in range(args.repeat)]
        label = "one event" if with_output else "nothing"
        print(f"| {label} | {statistics.median(runs):.1f} |")


if __name__ == "__main__":
    main()
