"""Helpers for integration tests on a real broker: produce, read back, run a loop, wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftloop_common.contracts import topics
from driftloop_common.contracts.events import (
    Audit,
    AuditEvent,
    Event,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelKey,
    ModelPromotedEvent,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.kafka import create_topics, make_consumer, make_producer
from driftloop_common.runtime.loop import Handler, RetryPolicy, ServiceLoop
from driftloop_common.runtime.settings import KafkaSettings
from driftloop_local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("en-us", "es-es", "fr-fr", "de-de", "pt-br", "it-it", "nl-nl", "ja-jp")


def request(i: int = 0, language: str | None = None) -> TrainingRequestedEvent:
    return TrainingRequestedEvent(
        producer="test",
        model_key=ModelKey(model_type="intent", language=language or LANGUAGES[i % 8]),
        payload=TrainingRequested(reason=TrainingReason.MANUAL, requested_by="test", note=str(i)),
    )


def audit_of(event: Event) -> list[Event]:
    return [
        event.follow_up(
            AuditEvent,
            producer="test",
            payload=Audit(action=event.event_type, actor="t", subject="s"),
        )
    ]


async def make_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    await create_topics(KafkaSettings(bootstrap_servers=bootstrap), names, partitions=partitions)


async def produce(bootstrap: str, topic: str, values: Sequence[bytes | Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            if isinstance(value, Event):
                await producer.send_and_wait(topic, value.to_bytes(), key=value.key)
            else:
                await producer.send_and_wait(topic, value, key=b"intent/en-us")
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 60) -> list[Any]:
    """Read `topic` from the beginning until `expect` records arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def real_loop(
    bootstrap: str,
    *,
    topics: Sequence[str],
    group: str,
    handle: Handler[Event],
    out_topic: str,
    name: str = "test",
    retry: RetryPolicy | None = None,
) -> ServiceLoop[Event]:
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    return ServiceLoop(
        service=name,
        topics=topics,
        decode=lambda record: decode_event(record.value or b""),
        handle=handle,
        consumer=make_consumer(settings, group_id=group, client_id=name),
        producer=make_producer(settings, client_id=name),
        retry=retry or RetryPolicy(attempts=5, initial_backoff_s=0.2, max_backoff_s=2),
        poll_timeout_ms=200,
        route=lambda event: out_topic,
    )


@contextlib.asynccontextmanager
async def running(loop: ServiceLoop[Any]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)  # a loop that crashed fails the test here


def register_versions(
    client: Any, name: str, count: int, params: dict[str, str] | None = None
) -> None:
    """A registered model `name` with `count` versions of one run (logging `params`): what a
    promotion needs of MLflow, without training anything."""
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name))
    for param, value in (params or {}).items():
        client.log_param(run.info.run_id, param, value)
    for _ in range(count):
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)


@contextlib.asynccontextmanager
async def hang_guard(timeout_s: float, explain: Callable[[], str]) -> AsyncIterator[None]:
    """Fail with `explain()` if the block hangs: a guard against a test waiting forever,
    not a statement about speed."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        pytest.fail(f"still waiting after {timeout_s} s: {explain()}")


class ServiceProcess:
    """One driftloop service as its own process (`python -m <module>`), logs to a file."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module, self.log, self.port = module, log, free_port()
        self.env = {
            **os.environ,
            "DRIFTLOOP_HTTP_PORT": str(self.port),
            "DRIFTLOOP_POLL_TIMEOUT_MS": "200",
            "DRIFTLOOP_LOG_JSON": "false",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def start(self, timeout_s: float = 120) -> None:
        self._assigned_before = self._assignments()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"{self.module} exited:\n{self.log_tail()}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url("/readyz"))).status_code == 200:
                        return
                await asyncio.sleep(0.3)
        raise AssertionError(f"{self.module} never became ready:\n{self.log_tail()}")

    def _assignments(self) -> int:
        return (
            self.log.read_text(errors="replace").count("partitions assigned")
            if self.log.exists()
            else 0
        )

    async def assigned(self, timeout_s: float = 60) -> None:
        """Wait until this run of the service holds its partitions: one reading from
        `latest` misses what is produced before that."""
        async with hang_guard(
            timeout_s, lambda: f"{self.module} got no partitions:\n{self.log_tail()}"
        ):
            while self._assignments() <= self._assigned_before:
                await asyncio.sleep(0.2)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            await asyncio.to_thread(self.proc.wait, 60)


async def events_until(
    bootstrap: str,
    topic: str,
    found: Callable[[list[Event]], bool],
    *,
    timeout_s: float,
    keep: Callable[[Event], bool] = lambda event: True,
    on_timeout: Callable[[], str] = lambda: "",
) -> list[Event]:
    """Read `topic` from the start, decoding events that `keep` accepts, until `found`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    events: list[Event] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not found(events):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s on {topic}; got {len(events)} event(s)\n"
                    + on_timeout()
                )
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = decode_event(record.value or b"")
                    if keep(event):
                        events.append(event)
        return events
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ the closed loop

# Far from both prototypes of `test_predictor_on_mlflow.PROTOTYPES` (refund, lost_card): the
# head's top-class probability is 0.51–0.69 on these (0.61 on average), against 0.9 recorded
# at promotion. ON_TOPIC scores 1.00.
OFF_TOPIC = (
    "what is the weather like tomorrow",
    "hello",
    "is the store open on sunday",
    "can you tell me a joke",
    "the cat sat on the mat",
)
ON_TOPIC = "please give me my money back"
OBSERVER = "observer"  # the simulator's OAuth client for reading: a rate-limit bucket of its own


@dataclass
class ClosedLoop:
    """The loop a rollback goes around, as processes on a real broker and MLflow server: the
    predictor serving `key` (real `TextClassifier` versions), the rollback-watcher, and the
    promoter with the targets predictor + genesys-nlu against the Genesys simulator."""

    bootstrap: str
    key: ModelKey
    client: Any  # MlflowClient
    sim: str
    secret: str
    domain: str
    predictor: ServiceProcess
    watcher: ServiceProcess
    promoter: ServiceProcess

    @property
    def name(self) -> str:
        return self.key.registered_model

    def logs(self) -> str:
        return "".join(
            f"\n--- {p.module}\n{p.log_tail(3000)}"
            for p in (self.promoter, self.watcher, self.predictor)
        )

    def champion(self) -> str | None:
        from driftloop_common.storage import registry

        found = registry.version_by_alias(self.client, self.name, registry.CHAMPION)
        return found.version if found else None

    async def promote(
        self, version: int, *, confidence: float = 0.9, accuracy: float = 0.9
    ) -> ModelPromotedEvent:
        """A passed `model.evaluated` of `version` → the promoter's `model.promoted`."""
        evaluated = ModelEvaluatedEvent(
            producer="test",
            model_key=self.key,
            payload=ModelEvaluated(
                registered_model=self.name,
                version=version,
                passed=True,
                metrics={"confidence": confidence, "challenger_accuracy": accuracy},
            ),
        )
        await produce(self.bootstrap, topics.MODEL_EVALUATED, [evaluated])
        found = await events_until(
            self.bootstrap,
            topics.MODEL_PROMOTED,
            lambda events: bool(events),
            keep=lambda e: e.model_key == self.key and e.payload.version == version,
            timeout_s=180,
            on_timeout=self.logs,
        )
        assert isinstance(found[0], ModelPromotedEvent)
        return found[0]

    async def infer(
        self, texts: Sequence[str], *, timeout_s: float = 30
    ) -> tuple[int, list[float]]:
        """The predictor's answer over HTTP: the version that scored, its confidences."""
        body = {
            "inputs": [
                {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}
            ]
        }
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            answer = await http.post(self.predictor.url(f"/v2/models/{self.name}/infer"), json=body)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        return int(found["model_version"]), [float(c) for c in found["outputs"][1]["data"]]

    async def serving(self, version: int, text: str, *, timeout_s: float = 120) -> None:
        """Ask the predictor until `version` answers (one prediction of it, of `text`)."""
        async with hang_guard(timeout_s, lambda: f"v{version} never answered{self.logs()}"):
            while (await self.infer([text]))[0] != version:
                await asyncio.sleep(0.05)

    async def window(self) -> int:
        """Predictions in the watcher's window of the live version (its metric)."""
        from driftloop_common.runtime.metrics import metric_prefix

        prefix = metric_prefix(self.watcher.env["DRIFTLOOP_SERVICE_NAME"])
        line = f'{prefix}_window_predictions{{model_key="{self.key}"}} '
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(self.watcher.url("/metrics"))).text
        found = [row for row in text.splitlines() if row.startswith(line)]
        return int(float(found[0][len(line) :])) if found else 0

    async def domain_versions(self, *, utterances: bool = False) -> list[dict[str, Any]]:
        """The NLU domain's versions, read with the simulator's `observer` client."""
        async with httpx.AsyncClient(base_url=self.sim, timeout=10) as http:
            token = (
                await http.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(OBSERVER, self.secret),
                )
            ).json()["access_token"]
            query = "pageSize=100" + ("&includeUtterances=true" if utterances else "")
            answer = await http.get(
                f"/api/v2/languageunderstanding/domains/{self.domain}/versions?{query}",
                headers={"Authorization": f"Bearer {token}"},
            )
        answer.raise_for_status()
        return list(answer.json()["entities"])


def utterances(version: dict[str, Any]) -> set[tuple[str, str]]:
    """(intent, text) of every utterance of a domain version read with its utterances."""
    return {
        (intent["name"], "".join(s["text"] for s in u["segments"]))
        for intent in version.get("intents", [])
        for u in intent.get("utterances", [])
    }


def _register(uri: str, key: ModelKey, versions: int) -> Any:
    """`versions` real `TextClassifier` versions of `key` (the prototype head): v1's run learnt
    from the first half of the train window only, v2's (and the later versions', which are
    v2's model registered again) from all of it, so a Genesys domain version built from v1
    holds other utterances than one built from v2."""
    import mlflow
    from mlflow import MlflowClient

    from driftloop_common.ml.encoder import TextEncoder
    from tests.integration.test_predictor_on_mlflow import register_version
    from tests.promotion_rows import WINDOWS, run_params

    client = MlflowClient(uri)
    encoder = TextEncoder().load()
    name = key.registered_model
    narrow = run_params()
    start, end = WINDOWS["train"]
    narrow["train_end"] = (start + (end - start) / 2).isoformat()
    for number, params in ((1, narrow), (2, run_params())):
        if number > versions:
            break
        assert register_version(uri, name, encoder, champion=False) == number
        run_id = client.get_model_version(name, str(number)).run_id
        for param, value in params.items():
            client.log_param(run_id, param, value)
    if versions > 2:
        second = client.get_model_version(name, "2")
        for _ in range(versions - 2):
            mlflow.register_model(second.source, name)  # the tracking URI: set above
    return client


@contextlib.asynccontextmanager
async def closed_loop(
    bootstrap: str,
    mlflow_uri: str,
    folder: Path,
    *,
    versions: int = 2,
    min_predictions: int = 30,
    window_minutes: float = 10,
    sim_env: dict[str, str] | None = None,
    promoter_env: dict[str, str] | None = None,
    service_env: dict[str, str] | None = None,
) -> AsyncIterator[ClosedLoop]:
    """Simulator, promoter and rollback-watcher started, `versions` versions registered, v1
    promoted (Genesys included) and served by the predictor. `sim_env` overrides the
    simulator's test settings (`test_promoter_genesys.simulator`), `promoter_env` the
    promoter's, `service_env` every service's (e.g. `DRIFTLOOP_POLL_TIMEOUT_MS`)."""
    import json

    from tests.integration.test_promoter_genesys import DOMAIN, SECRET, simulator
    from tests.promotion_rows import fill_store

    key = ModelKey.parse(f"intent/en-{uuid.uuid4().hex[:6]}")
    run = uuid.uuid4().hex[:6]
    store = folder / "store"
    fill_store(str(store), language=key.language)
    await make_topics(bootstrap, *topics.ALL_TOPICS)
    registering = asyncio.create_task(asyncio.to_thread(_register, mlflow_uri, key, versions))
    common = {"DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap, **(service_env or {})}
    sim_settings = {"DRIFTLOOP_SIM_CLIENTS": json.dumps({OBSERVER: SECRET}), **(sim_env or {})}
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(folder, **sim_settings))
        promoter = ServiceProcess(
            "driftloop_promoter",
            {
                **common,
                "DRIFTLOOP_MLFLOW__TRACKING_URI": mlflow_uri,
                "DRIFTLOOP_SERVICE_NAME": f"promoter-{run}",
                "DRIFTLOOP_AUTO_OFFSET_RESET": "latest",
                "DRIFTLOOP_STORE_URL": str(store),
                "DRIFTLOOP_TARGETS": json.dumps({str(key): ["predictor", "genesys-nlu"]}),
                "DRIFTLOOP_GENESYS_DOMAINS": json.dumps({str(key): DOMAIN}),
                "DRIFTLOOP_GENESYS__CLIENT_ID": "driftloop",
                "DRIFTLOOP_GENESYS__CLIENT_SECRET": SECRET,
                "DRIFTLOOP_GENESYS__API_BASE_URL": sim,
                **(promoter_env or {}),
            },
            folder / "promoter.log",
        )
        watcher = ServiceProcess(
            "driftloop_rollback_watcher",
            {
                **common,
                "DRIFTLOOP_SERVICE_NAME": f"rollback-watcher-{run}",
                "DRIFTLOOP_MIN_PREDICTIONS": str(min_predictions),
                "DRIFTLOOP_WINDOW_MINUTES": str(window_minutes),
            },
            folder / "watcher.log",
        )
        predictor = ServiceProcess(
            "driftloop_predictor",
            {
                **common,
                "DRIFTLOOP_MLFLOW__TRACKING_URI": mlflow_uri,
                "DRIFTLOOP_SERVICE_NAME": f"predictor-{run}",
                "DRIFTLOOP_SERVE": json.dumps([str(key)]),
                "DRIFTLOOP_RELOAD_MISSING_S": "0.5",  # ready soon after v1's promotion
            },
            folder / "predictor.log",
        )
        for process in (predictor, watcher, promoter):
            stack.push_async_callback(process.stop)

        async def first_champion() -> ClosedLoop:
            await asyncio.gather(promoter.start(), watcher.start())
            await asyncio.gather(promoter.assigned(), watcher.assigned())
            loop = ClosedLoop(
                bootstrap, key, await registering, sim, SECRET, DOMAIN, predictor, watcher, promoter
            )
            await loop.promote(1)
            return loop

        # The predictor starts meanwhile: it is ready once it has loaded v1.
        _, loop = await asyncio.gather(predictor.start(timeout_s=300), first_champion())
        await predictor.assigned()
        # The predictor is ready before it can answer quickly: its first answer loads the
        # encoder, importing transformers' model code (~11 s on 2 idle cores, over 30 s
        # under load). Asked once here, so that no wait or measurement includes that.
        await loop.infer([ON_TOPIC], timeout_s=300)
        yield loop
