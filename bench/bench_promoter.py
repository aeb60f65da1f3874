"""Promotion time: `model.evaluated` → `model.promoted` per target set, step by step, next to
the same done by hand.

Run:  .venv/bin/python bench/bench_promoter.py [--rows 900] [--repeats 5] [--storm 20]
          [--retry-after 1] [--rate-per-s R] [--burst B] [--training-delay-s S]

1. Starts a local MLflow server (SQLite, a temporary folder) and the Genesys simulator as
   a process (`python -m driftloop_simulator`, its defaults: a training takes 5 s, a token
   bucket of 180 calls refilled at 3 per second per OAuth client), and fills an
   interaction store with `--rows` labelled rows of three intents, spread over the train,
   validation and test windows a version's run records (20, 5 and 5 days).
2. Per target set (`predictor`; `predictor + genesys-nlu`; `predictor + model-config`; the
   last two again under a 429 storm: the next `--storm` API calls answer 429 with
   `Retry-After: --retry-after`), one model key with its registered versions. A first,
   untimed promotion makes v1 champion (and publishes a Genesys domain version, which the
   shadow check then compares with); then `--repeats` rounds, each promoting the next
   version with `Promoter.promote` (the service's targets with the service's defaults) and
   doing the same by hand, the target sets interleaved so that the machine's load hits
   them alike. A promotion that raises `RetryableError` is run again after the service
   loop's backoff (`RetryPolicy`), as the service would: that is how a storm longer than
   the client's 10 waits per call ends.
3. Each promotion (with its retries) gets an OAuth client of its own: a full rate-limit
   bucket, as after a quiet period (promotions are hours apart). `--rate-per-s 200
   --burst 400` lifts the simulator's rate limit (the integration tests' values).

The steps are timed by wrapping the targets' methods and the promoter's alias move
(exclusive times: a step's time excludes the steps timed inside it): draft (create the
domain version, tag its id), upload (read the rows, PUT the draft or POST the chunks, tag),
train wait (POST train, then poll until Trained), shadow (report, `detect` on the newest
test rows, and on the published version's), publish / PATCH, alias + tags (the commit
point: tags, alias move, the previous champion tagged inactive); other = the rest (reading
the version and the champion, closing the targets). 429 waits: wall time in which at least
one call waited out a 429 (the client's `sleep`, and the loop's backoff). Our own time =
total − train wait − the 429 waits outside the train wait. A row is the median of each
column over the rounds.

By hand, the bare minimum, in the same run: `MlflowClient.set_registered_model_alias`; for
Genesys one blocking `httpx.Client`: a token, `POST …/versions` with every utterance, `POST
…/train`, `GET` every 5 s until Trained, `POST …/publish`; for the model-config API the
chunks of 50 posted one after the other, then the PATCH. No retries: under a storm it stops
at the first 429. The rows are handed to it in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop_common.contracts.errors import RetryableError  # noqa: E402
from driftloop_common.contracts.events import (  # noqa: E402
    EncoderInfo,
    InteractionEmbedded,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
)
from driftloop_common.genesys import GenesysClient  # noqa: E402
from driftloop_common.runtime.loop import RetryPolicy  # noqa: E402
from driftloop_common.runtime.settings import GenesysSettings  # noqa: E402
from driftloop_common.storage.interactions import InteractionStore  # noqa: E402
from driftloop_local.mlflow import LocalMlflow  # noqa: E402
from driftloop_local.processes import free_port  # noqa: E402
from driftloop_promoter.genesys_nlu import GenesysNluTarget  # noqa: E402
from driftloop_promoter.model_config import ModelConfigTarget  # noqa: E402
from driftloop_promoter.promotion import Promoter  # noqa: E402
from driftloop_promoter.targets import PredictorTarget, Target  # noqa: E402
from driftloop_simulator.settings import SimulatorSettings  # noqa: E402
from tests.promotion_rows import WINDOWS, WORDS, run_params  # noqa: E402

SECRET = "bench-secret"
NLU = "/api/v2/languageunderstanding/domains"
FILLER = "i need help with my the please can you today urgent again".split()
STEPS = ("draft", "upload", "train wait", "shadow", "publish", "alias + tags")
Interval = tuple[float, float]


# ------------------------------------------------------------------ timing


class Spans:
    """Exclusive time per step (the steps are sequential; a step inside another is taken
    out of it), the intervals of the train wait, and the intervals of the 429 waits."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.generation = getattr(self, "generation", 0) + 1
        self.totals: dict[str, float] = defaultdict(float)
        self.train: list[Interval] = []
        self.waits: list[Interval] = []
        self.stack: list[str] = []

    @contextlib.asynccontextmanager
    async def span(self, name: str) -> Any:
        self.stack.append(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            ended = time.perf_counter()
            self.stack.pop()
            self.totals[name] += ended - started
            if self.stack:
                self.totals[self.stack[-1]] -= ended - started
            if name == "train wait":
                self.train.append((started, ended))

    async def sleep(self, seconds: float) -> None:
        await self.sleeper()(seconds)

    def sleeper(self) -> Callable[[float], Awaitable[None]]:
        """A Genesys client's `sleep` (it sleeps only to wait out a retry), counting for this
        promotion only: a failed `asyncio.gather` leaves its other calls running a while."""
        generation = self.generation

        async def sleep(seconds: float) -> None:
            started = time.perf_counter()
            await asyncio.sleep(seconds)
            if generation == self.generation:
                self.waits.append((started, time.perf_counter()))

        return sleep

    def wrap(self, obj: Any, attr: str, name: str, *, unless_in: str | None = None) -> None:
        fn: Callable[..., Awaitable[Any]] = getattr(obj, attr)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            if unless_in is not None and unless_in in self.stack:
                return await fn(*args, **kwargs)
            async with self.span(name):
                return await fn(*args, **kwargs)

        setattr(obj, attr, timed)

    def waited(self) -> tuple[float, float]:
        """(429 waits, the part of them outside the train wait), wall time."""
        waits = _union(self.waits)
        return _length(waits), _length(waits) - _length(_intersection(waits, _union(self.train)))


def _union(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _intersection(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _length(intervals: list[Interval]) -> float:
    return sum(end - start for start, end in intervals)


# ------------------------------------------------------------------ the world


@dataclass
class Scenario:
    label: str
    targets: list[str]
    language: str
    storm: int = 0
    key: ModelKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = ModelKey.parse(f"intent/{self.language}")


def fill_store(url: str, n: int, languages: list[str], seed: int = 0) -> None:
    """`n` labelled rows per language, three intents, spread over the windows by length."""
    rng = random.Random(seed)
    days = {split: (end - start).total_seconds() for split, (start, end) in WINDOWS.items()}
    total = sum(days.values())
    zeros = np.zeros(384, dtype=np.float32).tolist()
    rows = []
    for language in languages:
        for split, (start, end) in WINDOWS.items():
            count = round(n * days[split] / total)
            for i in range(count):
                label = rng.choice(sorted(WORDS))
                words = rng.sample(WORDS[label], 3) + rng.sample(FILLER, 3)
                rng.shuffle(words)
                rows.append(
                    InteractionEmbedded(
                        conversation_id=f"{language}-{split}-{i}",
                        language=language,
                        completed_at=start + (end - start) * (i + 0.5) / count,
                        embedding=zeros,
                        encoder=EncoderInfo(id="m", precision="fp32"),
                        label=label,
                        text=" ".join(words),
                    )
                )
    InteractionStore(url).append(rows)


def learnt_rows(url: str, language: str) -> list[tuple[str, str]]:
    """(text, label) of the train and validation windows: what a version learnt from."""
    store, rows = InteractionStore(url), []
    for split in ("train", "validation"):
        start, end = WINDOWS[split]
        table = store.read(language, start, end, columns=["text", "label"], labelled_only=True)
        texts, labels = table.column("text").to_pylist(), table.column("label").to_pylist()
        rows += zip(texts, labels, strict=True)
    return rows


@contextlib.contextmanager
def simulator(log_path: Path, clients: int, args: argparse.Namespace) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DRIFTLOOP_SIM_PORT": str(port),
        "DRIFTLOOP_SIM_CLIENT_SECRET": SECRET,
        "DRIFTLOOP_SIM_CLIENTS": json.dumps({f"bench-{i}": SECRET for i in range(clients)}),
    }
    for flag, variable in (
        ("rate_per_s", "RATE_PER_S"),
        ("burst", "BURST"),
        ("training_delay_s", "TRAINING_DELAY_S"),
    ):
        if getattr(args, flag) is not None:
            env[f"DRIFTLOOP_SIM_{variable}"] = str(getattr(args, flag))
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop_simulator"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the simulator did not start: see {log_path}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


class Bench:
    def __init__(self, uri: str, sim: str, store: str, retry_after: int) -> None:
        self.uri, self.sim, self.store = uri, sim, store
        self.retry_after = retry_after
        self.spans = Spans()
        self.clients = 0
        self.client_id = self.oauth_client()  # one per promotion, its retries included
        self.admin = httpx.Client(base_url=sim, timeout=10)
        self.mlflow = MlflowClient(uri)

    def oauth_client(self) -> str:
        self.clients += 1
        return f"bench-{self.clients - 1}"

    def genesys(self) -> GenesysClient:
        settings = GenesysSettings(
            client_id=self.client_id, client_secret=SECRET, api_base_url=self.sim
        )
        return GenesysClient(settings, sleep=self.spans.sleeper())

    def target(self, name: str, key: ModelKey) -> Target:
        spans = self.spans
        if name == "predictor":
            return PredictorTarget()
        client = self.genesys()
        if name == "genesys-nlu":
            nlu = GenesysNluTarget(client, f"domain-{key.language}", self.store)
            spans.wrap(nlu, "prepare", "upload")
            spans.wrap(nlu, "_draft", "draft", unless_in="publish")
            spans.wrap(client, "train_version", "train wait")
            spans.wrap(nlu, "_trained", "train wait")
            spans.wrap(nlu, "_gate", "shadow")
            spans.wrap(nlu, "activate", "publish")
            return nlu
        config = ModelConfigTarget(client, f"model-{key.language}", self.store)
        spans.wrap(config, "prepare", "upload")
        spans.wrap(config, "activate", "publish")
        return config

    def promoter(self, scenario: Scenario) -> Promoter:
        promoter = Promoter(self.uri, lambda key: scenario.targets, self.target)
        self.spans.wrap(promoter, "_make_champion", "alias + tags")
        return promoter

    def register(self, scenario: Scenario, versions: int) -> None:
        name = scenario.key.registered_model
        self.mlflow.create_registered_model(name)
        run = self.mlflow.create_run(self.mlflow.create_experiment(name))
        for param, value in run_params().items():
            self.mlflow.log_param(run.info.run_id, param, value)
        for _ in range(versions):
            self.mlflow.create_model_version(
                name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
            )
        # By hand the alias moves on a model of its own, so it never changes the champion.
        self.mlflow.create_registered_model(f"by-hand-{scenario.language}")
        self.mlflow.create_model_version(
            f"by-hand-{scenario.language}", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )

    def faults(self, **faults: Any) -> None:
        self.admin.post("/admin/faults", json=faults).raise_for_status()

    async def promote(self, scenario: Scenario, promoter: Promoter, version: int) -> dict:
        """One promotion, timed, retried as the service loop retries a `RetryableError`."""
        event = ModelEvaluatedEvent(
            producer="bench",
            model_key=scenario.key,
            payload=ModelEvaluated(
                registered_model=scenario.key.registered_model, version=version, passed=True
            ),
        )
        spans = self.spans  # the promoter's wrappers hold on to this one
        spans.reset()
        self.client_id = self.oauth_client()
        self.admin.delete("/admin/stats").raise_for_status()
        if scenario.storm:
            self.faults(storm_429=scenario.storm, storm_retry_after_s=self.retry_after)
        policy, failures, failed = RetryPolicy(), 0, None
        started = time.perf_counter()
        while True:
            try:
                events = await promoter.promote(event)
            except RetryableError as exc:  # the loop's retries, then Kafka's redelivery
                failures += 1
                if failures < policy.attempts:
                    await spans.sleep(policy.backoff(failures))
                    continue
                failed = f"RetryableError {policy.attempts} times: {str(exc)[:200]}"
            else:
                outcome = [e for e in events if e.event_type != "audit"]
                if not outcome or outcome[0].event_type != "model.promoted":
                    failed = str(outcome[0].payload if outcome else events)[:300]
            break
        total = time.perf_counter() - started
        if scenario.storm:
            self.admin.delete("/admin/faults").raise_for_status()
        stats = self.admin.get("/admin/stats").json()
        waits, waits_outside = spans.waited()
        steps = {step: spans.totals.get(step, 0.0) for step in STEPS}
        return {
            "total": total,
            **steps,
            "other": total - sum(steps.values()),
            "429 waits": waits,
            "own": total - steps["train wait"] - waits_outside,
            "calls": stats["total_calls"],
            "429s": stats["rate_limited"] + stats["faults_injected"],
            "retried": failures,
            "failed": failed,
        }

    # --------------------------------------------------------------- by hand

    def by_hand(self, scenario: Scenario, version: int, rows: list[tuple[str, str]]) -> float:
        """The bare minimum a person's script would do, timed; NaN when it failed."""
        if scenario.storm:
            self.faults(storm_429=scenario.storm, storm_retry_after_s=self.retry_after)
        started = time.perf_counter()
        try:
            self.mlflow.set_registered_model_alias(f"by-hand-{scenario.language}", "champion", "1")
            if "genesys-nlu" in scenario.targets:
                self._genesys_by_hand(scenario.key.language, rows)
            if "model-config" in scenario.targets:
                self._model_config_by_hand(scenario.key.language, version, rows)
        except httpx.HTTPStatusError:
            return float("nan")
        finally:
            if scenario.storm:
                self.admin.delete("/admin/faults").raise_for_status()
        return time.perf_counter() - started

    @contextlib.contextmanager
    def _http(self) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.sim, timeout=30) as http:
            answer = http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(self.oauth_client(), SECRET),
            )
            token = answer.raise_for_status().json()["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            yield http

    def _genesys_by_hand(self, language: str, rows: list[tuple[str, str]]) -> None:
        by_label: dict[str, list[str]] = defaultdict(list)
        for text, label in rows:
            by_label[label].append(text)
        intents = [
            {"name": label, "utterances": [{"segments": [{"text": t}]} for t in texts]}
            for label, texts in by_label.items()
        ]
        versions = f"{NLU}/by-hand-{language}/versions"
        with self._http() as http:
            body = {"language": language, "intents": intents}
            version = http.post(versions, json=body).raise_for_status().json()["id"]
            http.post(f"{versions}/{version}/train").raise_for_status()
            while True:
                time.sleep(5)
                answer = http.get(f"{versions}/{version}").raise_for_status().json()
                if answer["trainingStatus"] == "Trained":
                    break
            http.post(f"{versions}/{version}/publish").raise_for_status()

    def _model_config_by_hand(
        self, language: str, version: int, rows: list[tuple[str, str]]
    ) -> None:
        model = f"by-hand-{language}"
        interactions = [
            {"conversationId": str(i), "text": t, "label": lab} for i, (t, lab) in enumerate(rows)
        ]
        with self._http() as http:
            ids = [
                http.post(
                    "/api/v2/ml/trainingdata",
                    json={"modelId": model, "interactions": interactions[i : i + 50]},
                )
                .raise_for_status()
                .json()["id"]
                for i in range(0, len(interactions), 50)
            ]
            patch = {"trainingDataId": ids[0], "status": "ACTIVE", "version": str(version)}
            http.patch(f"/api/v2/ml/models/{model}", json=patch).raise_for_status()


# ------------------------------------------------------------------ main


COLUMNS = (
    ("total", "total s"),
    ("draft", "draft"),
    ("upload", "upload"),
    ("train wait", "train wait"),
    ("shadow", "shadow"),
    ("publish", "publish / PATCH"),
    ("alias + tags", "alias + tags"),
    ("other", "other"),
    ("429 waits", "429 waits"),
    ("own", "**our own**"),
)


def row_of(label: str, runs: list[dict], by_hand: list[float]) -> list[str]:
    done = [r for r in runs if r["failed"] is None]
    failed = len(runs) - len(done)

    def med(key: str, among: list[dict] = done) -> float:
        return statistics.median(r[key] for r in among)

    cells = [label]
    if not done:
        cells.append(f"failed {failed}/{len(runs)}, after {med('total', runs):.1f}")
        cells += ["–"] * (len(COLUMNS) - 1)
    else:
        for key, _ in COLUMNS:
            value = med(key)
            text = f"{value:.2f}" if value >= 0.005 or key in ("total", "own") else "–"
            if key == "total" and failed:
                text += f" ({failed}/{len(runs)} failed)"
            cells.append(f"**{text}**" if key == "own" else text)
    cells.append(f"{med('calls', runs):.0f} ({med('429s', runs):.0f})")
    lost = sum(1 for t in by_hand if t != t)
    hand = [t for t in by_hand if t == t]
    if not hand:
        cells.append(f"fails at the first 429 ({lost}/{len(by_hand)})")
    else:
        cells.append(f"{statistics.median(hand):.2f}" + (f" ({lost} failed)" if lost else ""))
    return cells


async def run(args: argparse.Namespace) -> None:
    storm = f"429 storm ({args.storm} × Retry-After {args.retry_after} s)"
    scenarios = [
        Scenario("predictor", ["predictor"], "en-pr"),
        Scenario("predictor + genesys-nlu", ["predictor", "genesys-nlu"], "en-gn"),
        Scenario("predictor + model-config", ["predictor", "model-config"], "en-mc"),
    ]
    if args.storm:
        scenarios += [
            Scenario(
                f"predictor + genesys-nlu, {storm}", scenarios[1].targets, "en-gs", args.storm
            ),
            Scenario(
                f"predictor + model-config, {storm}", scenarios[2].targets, "en-ms", args.storm
            ),
        ]
    clients = (args.repeats + 1) * len(scenarios) * 2 + 8
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        started = time.perf_counter()
        fill_store(store, args.rows, [s.language for s in scenarios])
        filled = time.perf_counter() - started
        print(
            f"store: {args.rows} rows × {len(scenarios)} keys: {filled:.1f} s",
            file=sys.stderr,
        )
        server = LocalMlflow(Path(tmp) / "mlflow")
        uri = server.start()
        try:
            with simulator(Path(tmp) / "simulator.log", clients, args) as sim:
                bench = Bench(uri, sim, store, args.retry_after)
                promoters, rows = {}, {}
                for s in scenarios:
                    bench.register(s, args.repeats + 1)
                    promoters[s.label] = bench.promoter(s)
                    rows[s.label] = learnt_rows(store, s.language)
                    first = Scenario(s.label, s.targets, s.language)  # no storm
                    warm = await bench.promote(first, promoters[s.label], 1)
                    if warm["failed"]:
                        raise SystemExit(f"{s.label}: the first promotion failed: {warm}")
                runs: dict[str, list[dict]] = defaultdict(list)
                by_hand: dict[str, list[float]] = defaultdict(list)
                for r in range(args.repeats):
                    for s in scenarios:
                        result = await bench.promote(s, promoters[s.label], r + 2)
                        hand = bench.by_hand(s, r + 2, rows[s.label])
                        runs[s.label].append(result)
                        by_hand[s.label].append(hand)
                        steps = " ".join(
                            f"{k} {result[k]:.2f}" for k, _ in COLUMNS if result[k] >= 0.005
                        )
                        print(
                            f"round {r + 1} {s.label}: {steps}, calls {result['calls']} "
                            f"({result['429s']} × 429), by hand {hand:.2f}"
                            + (f"; FAILED: {result['failed']}" if result["failed"] else ""),
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            server.stop()
    header = ["target set", *(title for _, title in COLUMNS), "API calls (429s)", "by hand s"]
    table = [row_of(s.label, runs[s.label], by_hand[s.label]) for s in scenarios]
    print()
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for cells in table:
        print("| " + " | ".join(cells) + " |")
    for s in scenarios:
        for reason in sorted({r["failed"] for r in runs[s.label] if r["failed"]}):
            print(f"\n{s.label} failed: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=900, help="labelled rows per model key")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--storm", type=int, default=20, help="429s in the storm (0: none)")
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--rate-per-s", type=float, help="simulator's (default 3)")
    parser.add_argument("--burst", type=int, help="simulator's (default 180)")
    parser.add_argument("--training-delay-s", type=float, help="simulator's (default 5)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.INFO if args.verbose else logging.ERROR)
    sim = SimulatorSettings()
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}; "
        f"simulator: training {args.training_delay_s or sim.training_delay_s:g} s, "
        f"rate {args.rate_per_s or sim.rate_per_s:g}/s, burst {args.burst or sim.burst}"
    )
    asyncio.run(run(args))
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
