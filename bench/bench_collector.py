"""Collector throughput end to end through Kafka, next to the raw encoder on the same texts.

    .venv/bin/python bench/bench_collector.py [--n 3000] [--rounds 3] [--warmup 500]
        [--settle-s 0.5] [--format genesys-eventbridge] [--threads N] [--batch-size B]
        [--precision fp32] [--profile collector.prof] [--log collector.log]
        [--collector-cpus 1]

1. Starts a local Kafka broker in a temporary folder (as tests/integration do; the jars
   come from `driftloop kafka fetch`'s cache), creates the topics.
2. Starts the collector as a process (`python -m driftloop_collector`, service defaults
   but for the settle time and the store folder) and waits for `/readyz`.
3. Sends `--warmup` other conversations through first (a fresh broker's JVM compiles
   for its first seconds, and so do the collector's first batches). Then, `--rounds`
   times: publishes N new conversations to `interactions.raw` as fast as the producer
   goes (`driftloop replay`'s `publish_records`), and reads `interactions.embedded` until
   every one of the N has come out. Collector rate = N / (first publish → last event).
4. Right after each round, while the collector and the broker idle: the raw encoder,
   `TextEncoder.encode` in this process on exactly the texts the collector emitted in that
   round (predicted by the collector's own assembler and checked against the output),
   same precision, threads and batch size, one call over all texts (the encoder's best
   case: one global sort), `--repeat` times. Ratio per round = collector rate / raw rate;
   the headline is the median over rounds, so a change in the machine's load hits both
   sides of a ratio.

By default the broker, this process's producer and consumer run on the same CPUs as the
collector. `--collector-cpus 1` gives the collector (and the raw encoder it is compared
with) CPU 1 alone and puts the broker and this process's clients on the others, as in a
deployment where the broker runs on its own machines. Prints a markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop_cli.generate import publish_records  # noqa: E402
from driftloop_collector.assembler import AssemblerConfig, ConversationAssembler  # noqa: E402
from driftloop_collector.genesys import parse_raw  # noqa: E402
from driftloop_common import topics  # noqa: E402
from driftloop_common.ml.encoder import TextEncoder  # noqa: E402
from driftloop_common.runtime.kafka import create_topics  # noqa: E402
from driftloop_common.runtime.settings import KafkaSettings  # noqa: E402
from driftloop_local.kafka import LocalKafka  # noqa: E402
from driftloop_local.processes import free_port  # noqa: E402
from driftloop_synthetic import GeneratorConfig, OutputFormat, generate, kafka_records  # noqa: E402

ALL_CPUS = frozenset(os.sched_getaffinity(0))


def cpu_set(text: str) -> set[int]:
    """`1` or `0,2` or `2-3` → CPU numbers; they must leave this machine a CPU for the rest."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus < ALL_CPUS:
        raise argparse.ArgumentTypeError(f"choose a proper subset of CPUs {sorted(ALL_CPUS)}")
    return cpus


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text format (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Collector:
    """`python -m driftloop_collector` with its HTTP port, log and store in `folder`."""

    def __init__(self, bootstrap: str, folder: Path, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.log = folder / "collector.log"
        env = {
            **os.environ,
            "DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLOOP_HTTP_PORT": str(self.port),
            "DRIFTLOOP_STORE_URL": str(folder / "store"),
            "DRIFTLOOP_SETTLE_S": str(args.settle_s),
            "DRIFTLOOP_ENCODER_PRECISION": args.precision,
            "DRIFTLOOP_LOG_LEVEL": "WARNING",
        }
        if args.threads:
            env["DRIFTLOOP_ENCODER_THREADS"] = str(args.threads)
        if args.batch_size:
            env["DRIFTLOOP_ENCODER_BATCH_SIZE"] = str(args.batch_size)
        profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
        cpus = args.collector_cpus
        self.proc = subprocess.Popen(
            [sys.executable, *profile, "-m", "driftloop_collector"],
            env=env,
            cwd=ROOT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    async def ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"collector exited:\n{self.log.read_text()[-3000:]}")
                try:
                    if (await http.get(self.url("/readyz"))).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("collector never became ready")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(self.url("/metrics"))).text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def pin(cpus: set[int] | None) -> None:
    """Run the calling thread, and the threads and processes it starts from now on, on
    `cpus` (all of this machine's when None)."""
    os.sched_setaffinity(0, cpus or ALL_CPUS)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) a process has used so far; this one without `pid`."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish_and_collect(
    bootstrap: str,
    out: AIOKafkaConsumer,
    collector: Collector,
    records: list[tuple[bytes, bytes]],
    n: int,
    timeout_s: float,
) -> dict:
    """Publish `records` (as fast as the producer goes) and read `interactions.embedded`
    until `n` more events came out: timings and the raw event values."""
    started = time.perf_counter()
    publish = asyncio.create_task(
        asyncio.to_thread(
            publish_records,
            records,
            KafkaSettings(bootstrap_servers=bootstrap),
            topics.INTERACTIONS_RAW,
            None,
            on_acked=lambda: None,
        )
    )
    published_s = None
    values: list[bytes] = []
    arrivals: list[float] = []
    while len(values) < n:
        if time.perf_counter() > started + timeout_s:
            raise RuntimeError(f"{len(values)}/{n} embedded after {timeout_s} s")
        if collector.proc.poll() is not None:
            raise RuntimeError(f"collector exited:\n{collector.log.read_text()[-3000:]}")
        for batch in (await out.getmany(timeout_ms=200)).values():
            now = time.perf_counter()
            values += [record.value for record in batch]  # parsed after the clock stops
            arrivals += [now] * len(batch)
        if published_s is None and publish.done():
            published_s = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    await publish
    return {
        "elapsed": elapsed,
        "published": published_s or elapsed,
        "values": values,
        "arrivals": [t - started for t in arrivals],
    }


@dataclass(frozen=True)
class Round:
    """One timed burst: its Genesys messages and the texts the collector will emit."""

    records: list[tuple[bytes, bytes]]
    texts: list[str]


async def through_kafka(
    bootstrap: str,
    broker_pid: int | None,
    warmup: list[tuple[bytes, bytes]],
    rounds: list[Round],
    raw: Callable[[list[str]], tuple[float, float]],
    folder: Path,
    args: argparse.Namespace,
) -> list[dict]:
    """Start the collector, warm everything up on `warmup` (the broker's JIT, the
    collector's first batches), then time each round through it, each followed by the
    raw encoder on the same texts (`raw`, while the collector and the broker idle)."""
    await create_topics(KafkaSettings(bootstrap_servers=bootstrap), topics.ALL_TOPICS)
    out = AIOKafkaConsumer(
        topics.INTERACTIONS_EMBEDDED,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await out.start()
    collector = Collector(bootstrap, folder, args)
    results = []
    try:
        await collector.ready()
        if warmup:
            expected = len(assembled_texts(warmup))
            await publish_and_collect(bootstrap, out, collector, warmup, expected, args.timeout_s)
        for round_ in rounds:
            result = await timed_round(bootstrap, broker_pid, out, collector, round_, args)
            result["raw"] = [raw(round_.texts) for _ in range(args.repeat)]
            results.append(result)
    finally:
        collector.stop()
        await out.stop()
    return results


async def timed_round(
    bootstrap: str,
    broker_pid: int | None,
    out: AIOKafkaConsumer,
    collector: Collector,
    round_: Round,
    args: argparse.Namespace,
) -> dict:
    n = len(round_.texts)
    before = await collector.metrics()
    pids = {"collector": collector.proc.pid, "broker": broker_pid, "bench": None}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid or name == "bench"}
    run = await publish_and_collect(bootstrap, out, collector, round_.records, n, args.timeout_s)
    cpu = {name: cpu_seconds(pids[name]) - spent for name, spent in cpu_before.items()}
    after = await collector.metrics()
    bodies = [json.loads(v) for v in run["values"]]
    ids = {b["payload"]["conversation_id"] for b in bodies}
    if len(ids) != n:
        raise RuntimeError(f"{len(ids)} distinct conversations in {len(bodies)} events")
    if sorted(b["payload"]["text"] for b in bodies) != sorted(round_.texts):
        raise RuntimeError("the collector emitted other texts than its assembler predicted")
    arrivals = sorted(run["arrivals"])
    lo, hi = arrivals[n // 10], arrivals[(9 * n) // 10]

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    return {
        "n": n,
        "elapsed": run["elapsed"],
        "published": run["published"],
        "first_out": arrivals[0],
        "steady": (hi - lo) and (((9 * n) // 10 - n // 10) / (hi - lo)),
        "quantiles": [arrivals[min(n - 1, n * q // 10)] for q in (1, 5, 9, 10)],
        "embed_s": delta("driftloop_collector_embedding_seconds_sum"),
        "flushes": delta("driftloop_collector_embedding_seconds_count"),
        "cpu": cpu,
    }


def assembled_texts(records: list[tuple[bytes, bytes]]) -> list[str]:
    """The texts the collector will emit for `records`: its own parser and assembler."""
    assembler = ConversationAssembler(AssemblerConfig())
    now = datetime.now(UTC)
    done = [
        c
        for offset, (_, value) in enumerate(records)
        for c in assembler.add(parse_raw(value, partition=0, offset=offset), now)
    ]
    done += assembler.expire(now + timedelta(days=1))
    return [c.text for c in done]


def time_encode(
    encoder: TextEncoder, texts: list[str], batch_size: int, repeat: int
) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of this process) per `encode(texts)`, called from a
    worker thread as the collector calls it (`asyncio.to_thread`)."""
    runs = []
    with ThreadPoolExecutor(1) as worker:
        for _ in range(repeat):
            started, cpu = time.perf_counter(), cpu_seconds()
            worker.submit(encoder.encode, texts, batch_size).result()
            runs.append((time.perf_counter() - started, cpu_seconds() - cpu))
    return runs


def _default_batch_size() -> int:
    from driftloop_collector.settings import CollectorSettings

    return CollectorSettings.model_fields["encoder_batch_size"].default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="conversations")
    parser.add_argument(
        "--warmup", type=int, default=500, help="conversations through the pipeline first"
    )
    parser.add_argument(
        "--format",
        type=OutputFormat,
        default=OutputFormat.GENESYS_EVENTBRIDGE,
        choices=list(OutputFormat),
        help="what is published (genesys: several pieces per conversation, assembled)",
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--threads", type=int, default=None, help="encoder threads (both)")
    parser.add_argument("--batch-size", type=int, default=None, help="encoder batch (both)")
    parser.add_argument("--settle-s", type=float, default=0.5, help="collector's settle time")
    parser.add_argument("--rounds", type=int, default=3, help="timed bursts, other texts each")
    parser.add_argument(
        "--repeat", type=int, default=1, help="raw encoder runs after each round (median)"
    )
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the collector")
    parser.add_argument("--log", type=Path, default=None, help="keep the collector's stderr")
    parser.add_argument(
        "--collector-cpus",
        type=cpu_set,
        default=None,
        help="CPUs for the collector and the raw encoder (e.g. 1); the broker and this "
        "process's clients get the others. Default: everything shares every CPU",
    )
    args = parser.parse_args()
    rest = ALL_CPUS - args.collector_cpus if args.collector_cpus else None

    start = datetime(2026, 11, 1, tzinfo=UTC)
    load_before = os.getloadavg()
    rounds = []
    for k in range(args.rounds):  # other conversations each round (ids are never reused)
        config = GeneratorConfig(
            seed=args.seed + 10 * k, count=args.n, start=start, end=start + timedelta(days=7)
        )
        records = list(kafka_records(generate(config), args.format))
        rounds.append(Round(records, assembled_texts(records)))
    warmup = list(
        kafka_records(
            generate(
                GeneratorConfig(
                    seed=args.seed + 1,
                    count=args.warmup,
                    start=start - timedelta(days=7),
                    end=start,
                )
            ),
            args.format,
        )
    )
    pin(args.collector_cpus)  # the encoder's threads start here: on the collector's CPUs
    encoder = TextEncoder(precision=args.precision, num_threads=args.threads).load()
    batch_size = args.batch_size or _default_batch_size()
    encoder.encode(rounds[0].texts[:64], batch_size=batch_size)  # warm-up

    def raw(texts: list[str]) -> tuple[float, float]:
        pin(args.collector_cpus)
        try:
            return time_encode(encoder, texts, batch_size, 1)[0]
        finally:
            pin(rest)

    pin(rest)  # the broker and this process's Kafka clients
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        folder = Path(tmp)
        broker = LocalKafka(folder / "kafka")
        bootstrap = broker.start(timeout_s=180)
        try:
            results = asyncio.run(
                through_kafka(bootstrap, broker.pid(), warmup, rounds, raw, folder, args)
            )
        finally:
            broker.stop()
            if args.log and (folder / "collector.log").exists():
                shutil.copyfile(folder / "collector.log", args.log)
    load = os.getloadavg()
    words = sorted(len(t.split()) for t in rounds[0].texts)
    print(f"command: .venv/bin/python {shlex.join(['bench/bench_collector.py', *sys.argv[1:]])}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {len(ALL_CPUS)} CPUs, "
        "load average (1, 5, 15 min) before / after: "
        + " / ".join(", ".join(f"{v:.2f}" for v in ld) for ld in (load_before, load))
        + "; "
        f"encoder {args.precision}, {encoder.num_threads} threads, batch {batch_size}; "
        + (
            f"CPUs: collector and raw encoder {sorted(args.collector_cpus)}, broker and "
            f"bench {sorted(rest)}"
            if args.collector_cpus and rest
            else "CPUs: all shared"
        )
    )
    print(
        f"data: {args.rounds} rounds of {args.n} conversations ("
        + ", ".join(f"{len(r.texts)}" for r in rounds)
        + " with customer text; "
        + ", ".join(f"{len(r.records)}" for r in rounds)
        + f" {args.format.value} messages); round 1's text words median "
        f"{words[len(words) // 2]}, max {words[-1]}"
    )
    for i, run in enumerate(results, 1):
        n = run["n"]
        raw_wall = statistics.median(wall for wall, _ in run["raw"])
        raw_cpu = statistics.median(cpu for _, cpu in run["raw"])
        cpu = run["cpu"]
        run["collector_rate"], run["raw_rate"] = n / run["elapsed"], n / raw_wall
        print(
            f"round {i}: published in {run['published']:.2f} s, first embedded event after "
            f"{run['first_out']:.2f} s, {run['flushes']:.0f} flushes, encoder time "
            f"{run['embed_s']:.2f} s of {run['elapsed']:.2f} s; 10 %, 50 %, 90 %, all out "
            "after "
            + ", ".join(f"{t:.2f}" for t in run["quantiles"])
            + " s; CPU per text: collector process "
            f"{cpu['collector'] / n * 1e3:.2f} ms, raw encoder {raw_cpu / n * 1e3:.2f} ms, "
            f"broker {cpu.get('broker', float('nan')) / n * 1e3:.2f} ms, this process "
            f"{cpu['bench'] / n * 1e3:.2f} ms"
        )
    print()
    columns = [
        "round",
        "interactions",
        "collector, end to end through Kafka (/s)",
        "raw encoder, same texts (/s)",
        "collector / raw",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|---:|")
    for i, run in enumerate(results, 1):
        print(
            f"| {i} | {run['n']} | {run['collector_rate']:,.1f} | {run['raw_rate']:,.1f} | "
            f"{run['collector_rate'] / run['raw_rate']:.0%} |"
        )
    ratios = [run["collector_rate"] / run["raw_rate"] for run in results]
    print(f"| **median** | | | | **{statistics.median(ratios):.0%}** |")


if __name__ == "__main__":
    main()
