"""Time to rollback: from the moment the rollback-watcher's window condition is met to the
previous version live everywhere, next to the same rollback asked for by hand.

Run:  .venv/bin/python bench/bench_rollback.py [--repeats 3] [--manual 3] [--predictions 30]
          [--max-load 2.5] [--max-wait-s 900]

1. A local Kafka broker and MLflow server (temporary folders), the Genesys simulator as a
   process with its default latencies (a training takes 5 s; a bucket of 180 calls per OAuth
   client refilled at 3 per second), and the services as processes with their defaults (the
   loops' poll timeout 1 s, the Genesys NLU target polling a training every 2 s), set up as
   `tests/integration/test_closed_loop.py` sets them up (`helpers.closed_loop`): the
   predictor serving one model key with real `TextClassifier` versions (MiniLM + the
   two-prototype head of `test_predictor_on_mlflow.py`), the rollback-watcher with
   `DRIFTLOOP_MIN_PREDICTIONS=--predictions` (the default is 200) and its default 15 min
   window, the promoter with the targets predictor + genesys-nlu. v1 is promoted first.
   Only change to a default: `DRIFTLOOP_GENESYS_NLU__SHADOW_ROWS=20`, so that the set-up
   promotions of each round spend fewer rate-limited `detect`s (a rollback is not gated:
   it makes no `detect`).
2. `--repeats` automatic rounds, each on a new version v (v2, v3, …): v promoted over v1
   (reference confidence 0.9, accuracy 0.9), asked until it answers, then left alone until
   the simulator's bucket has refilled what the promotion spent (promotions and rollbacks
   are minutes apart). N − 1 off-topic texts (confidence ~0.6) go to the predictor; once the
   watcher's window holds them (its `window_predictions` gauge), t0 = the moment the request
   with the N-th is sent. Measured from t0: (a) `rollback.requested` published (its Kafka
   record's timestamp), (b) `model.rolled_back` published, (c) the predictor answers with
   v1 (asked every 50 ms, on-topic: these never lower the confidence), (d) Genesys serves
   v1: the simulator's `datePublished` of the new domain version built from v1 (the list of
   versions is read every 0.5 s with an OAuth client of its own). Also noted: how long the
   request that v1 answered first took (v1 is loaded again, and its encoder loads on first
   use), the slowest answer before it, and the 429s the simulator answered from t0 on.
3. `--manual` rounds the same, without the off-topic traffic: t0 = the moment `driftloop
   publish rollback -m intent -l <language>` is started; measured as above, and also from
   the CLI's `rollback.requested` published.

What a user would otherwise have (an alert on the confidence metric, e.g. Prometheus'
`for: 5m`, then a person who runs `driftloop publish rollback`) cannot be benchmarked: the
alert alone waits 5 minutes plus its evaluation interval, and the person is not a number.
The manual rounds measure what follows once the person acts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop_common.contracts import topics  # noqa: E402
from driftloop_common.contracts.events import Event, decode_event  # noqa: E402
from driftloop_common.runtime.settings import ServiceSettings  # noqa: E402
from driftloop_local.kafka import LocalKafka  # noqa: E402
from driftloop_local.mlflow import LocalMlflow  # noqa: E402
from driftloop_simulator.settings import SimulatorSettings  # noqa: E402
from tests.integration.helpers import (  # noqa: E402
    OFF_TOPIC,
    ON_TOPIC,
    ClosedLoop,
    closed_loop,
    hang_guard,
)

STEPS = (
    ("rollback.requested", "requested"),
    ("model.rolled_back", "rolled_back"),
    ("predictor answers v1", "predictor"),
    ("Genesys serves v1", "genesys"),
)


def simulator_defaults() -> dict[str, str]:
    """The simulator's own defaults (the tests' simulator overrides them)."""
    fields = SimulatorSettings.model_fields
    return {
        f"DRIFTLOOP_SIM_{name.upper()}": str(fields[name].default)
        for name in ("training_delay_s", "rate_per_s", "burst")
    }


async def published_at(
    bootstrap: str, topic: str, match: Callable[[Event], bool], since: float
) -> float:
    """The record timestamp (s) of the first event on `topic` that `match`es, sent at or
    after `since`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.timestamp / 1000 < since - 0.001:
                        continue
                    if match(decode_event(record.value or b"")):
                        return float(record.timestamp) / 1000
    finally:
        await consumer.stop()


async def predictor_back(loop: ClosedLoop, took: list[float]) -> float:
    """When v1 first answers; `took` gets how long that answer took (v1 swapped in cold)
    and the slowest of the answers before it."""
    slowest = 0.0
    while True:
        sent = time.time()
        version, _ = await loop.infer([ON_TOPIC])
        answered = time.time()
        if version == 1:
            took += [answered - sent, slowest]
            return answered
        slowest = max(slowest, answered - sent)
        await asyncio.sleep(0.05)


async def genesys_back(loop: ClosedLoop, since: float) -> float:
    prefix = f"{loop.name} v1 "
    while True:
        for version in await loop.domain_versions():
            if version["published"] and version.get("description", "").startswith(prefix):
                at = datetime.fromisoformat(version["datePublished"]).timestamp()
                if at >= since - 0.001:
                    return at
        await asyncio.sleep(0.5)


async def sim(loop: ClosedLoop, method: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=loop.sim, timeout=10) as http:
        answer = await http.request(method, path)
        answer.raise_for_status()
        return answer.json() if answer.content else None


async def prepare(loop: ClosedLoop, version: int, text: str, rate: float) -> None:
    """`version` promoted over v1 and answering; the rate-limit bucket refilled."""
    before = (await sim(loop, "GET", "/admin/stats"))["total_calls"]
    await loop.promote(version, confidence=0.9, accuracy=0.9)
    spent = (await sim(loop, "GET", "/admin/stats"))["total_calls"] - before
    settled = time.monotonic() + spent / rate
    await loop.serving(version, text)
    await asyncio.sleep(max(0.0, settled - time.monotonic()))


async def measure(loop: ClosedLoop, version: int, t0: float, request: Any) -> dict[str, float]:
    """Seconds from t0 to each step of the rollback of `version`."""

    def rolled(e: Event) -> bool:
        return e.model_key == loop.key and getattr(e.payload, "from_version", None) == version

    took: list[float] = []
    async with hang_guard(300, loop.logs):
        times = await asyncio.gather(
            published_at(loop.bootstrap, topics.ROLLBACK_REQUESTED, request, t0),
            published_at(loop.bootstrap, topics.MODEL_ROLLED_BACK, rolled, t0),
            predictor_back(loop, took),
            genesys_back(loop, t0),
        )
    stats = await sim(loop, "GET", "/admin/stats")
    assert loop.champion() == "1", loop.logs()
    found = {step: at - t0 for (_, step), at in zip(STEPS, times, strict=True)}
    return found | {
        "429s": stats["rate_limited"],
        "calls": stats["total_calls"],
        "first v1 answer": took[0],
        "slowest before": took[1],
    }


async def automatic(loop: ClosedLoop, version: int, n: int, rate: float) -> dict[str, float]:
    await prepare(loop, version, OFF_TOPIC[0], rate)  # one prediction of `version`
    texts = [OFF_TOPIC[i % len(OFF_TOPIC)] for i in range(n - 2)]
    answered, confidences = await loop.infer(texts)
    assert answered == version
    async with hang_guard(120, loop.logs):
        while True:
            held = await loop.window()
            if held >= n - 1:
                break
            await asyncio.sleep(0.05)
    assert held == n - 1, f"{held} predictions in the window, not {n - 1}"
    await sim(loop, "DELETE", "/admin/stats")
    t0 = time.time()
    answered, last = await loop.infer([OFF_TOPIC[1]])  # the N-th: the window is full
    assert answered == version

    def by_watcher(e: Event) -> bool:
        return e.model_key == loop.key and getattr(e.payload, "from_version", None) == version

    found = await measure(loop, version, t0, by_watcher)
    mean = statistics.fmean([*confidences, *last])
    print(f"v{version} automatic: {fmt(found)}; window mean ≥ {mean:.3f}", file=sys.stderr)
    return found


async def manual(loop: ClosedLoop, version: int, rate: float) -> dict[str, float]:
    await prepare(loop, version, ON_TOPIC, rate)
    await sim(loop, "DELETE", "/admin/stats")
    cli = Path(sys.executable).parent / "driftloop"
    argv = [str(cli), "publish", "rollback", "-m", "intent", "-l", loop.key.language]
    argv += ["-b", loop.bootstrap, "-r", "bench: by hand"]
    t0 = time.time()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )

    def by_cli(e: Event) -> bool:
        return e.model_key == loop.key and e.producer == "cli"

    found, (_, err) = await asyncio.gather(measure(loop, version, t0, by_cli), proc.communicate())
    assert proc.returncode == 0, err.decode(errors="replace")
    requested = found["requested"]
    found |= {f"{step} (from the event)": found[step] - requested for _, step in STEPS[1:]}
    print(f"v{version} by hand: {fmt(found)}", file=sys.stderr)
    return found


def fmt(found: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in found.items())


def cell(rounds: list[dict[str, float]], step: str) -> str:
    values = [r[step] for r in rounds]
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


async def run(args: argparse.Namespace, bootstrap: str, uri: str, folder: Path) -> tuple:
    sim_env = simulator_defaults()
    rate = float(sim_env["DRIFTLOOP_SIM_RATE_PER_S"])
    poll = ServiceSettings.model_fields["poll_timeout_ms"].default
    versions = 1 + args.repeats + args.manual
    async with closed_loop(
        bootstrap,
        uri,
        folder,
        versions=versions,
        min_predictions=args.predictions,
        window_minutes=15,
        sim_env=sim_env,
        promoter_env={"DRIFTLOOP_GENESYS_NLU__SHADOW_ROWS": "20"},
        service_env={"DRIFTLOOP_POLL_TIMEOUT_MS": str(poll)},
    ) as loop:
        measured_load = os.getloadavg()
        try:
            auto = [
                await automatic(loop, v, args.predictions, rate) for v in range(2, 2 + args.repeats)
            ]
            by_hand = [await manual(loop, v, rate) for v in range(2 + args.repeats, 1 + versions)]
        except BaseException:
            print(f"the services' logs:{loop.logs()}", file=sys.stderr)
            raise
    return auto, by_hand, measured_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="automatic rounds")
    parser.add_argument("--manual", type=int, default=3, help="rounds by hand (the CLI)")
    parser.add_argument("--predictions", type=int, default=30, help="the watcher's N")
    parser.add_argument("--max-load", type=float, default=None, help="wait for a lower load")
    parser.add_argument("--max-wait-s", type=float, default=900)
    args = parser.parse_args()
    if args.predictions < 3:
        parser.error("--predictions must be at least 3")
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    started = time.monotonic()
    while (
        args.max_load is not None
        and os.getloadavg()[0] >= args.max_load
        and time.monotonic() - started < args.max_wait_s
    ):
        print(f"load {os.getloadavg()[0]:.2f} ≥ {args.max_load}: waiting", file=sys.stderr)
        time.sleep(30)
    load_start = os.getloadavg()
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        folder = Path(tmp)
        broker, tracking = LocalKafka(folder / "kafka"), LocalMlflow(folder / "mlflow")
        try:
            uri = tracking.start()
            bootstrap = broker.start(timeout_s=180)
            auto, by_hand, load_measured = asyncio.run(run(args, bootstrap, uri, folder))
        finally:
            broker.stop()
            tracking.stop()
    load_end = os.getloadavg()

    def loads(values: tuple[float, ...]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print(f"command: .venv/bin/python {shlex.join(['bench/bench_rollback.py', *sys.argv[1:]])}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average (1, 5, 15 min) at start {loads(load_start)}, before the rounds "
        f"{loads(load_measured)}, at end {loads(load_end)}; "
        f"{time.perf_counter() - begun:.0f} s in all"
    )
    print()
    header = " | ".join(f"{label} s" for label, _ in STEPS)
    print(f"| path (rounds) | {header} | first v1 answer took s | 429s |")
    print("|---|" + "---:|" * (len(STEPS) + 2))
    rows = [
        (f"automatic, from the N-th low-confidence request ({len(auto)})", auto, ""),
        (f"by hand, from `driftloop publish rollback` started ({len(by_hand)})", by_hand, ""),
        (
            f"by hand, from its `rollback.requested` published ({len(by_hand)})",
            by_hand,
            " (from the event)",
        ),
    ]
    for label, rounds, suffix in rows:
        if not rounds:
            continue
        cells = [
            "–" if suffix and step == "requested" else cell(rounds, step + suffix)
            for _, step in STEPS
        ]
        spent = sum(r["429s"] for r in rounds)
        first = cell(rounds, "first v1 answer")
        print(f"| {label} | " + " | ".join(cells) + f" | {first} | {spent:.0f} |")
    print(
        "\n(median / max, seconds; first v1 answer took: the request that v1 answered first,"
        " from its send to its answer; the slowest answer before it, max over the rounds: "
        f"{max(r['slowest before'] for r in auto + by_hand):.2f} s)"
    )


if __name__ == "__main__":
    main()
