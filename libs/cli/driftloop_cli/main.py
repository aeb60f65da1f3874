"""`driftloop`: publish events by hand, watch topics, run Kafka and the loop on this machine."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from driftloop_cli import generate as generate_commands
from driftloop_cli import kafka_io
from driftloop_cli import leads as lead_commands
from driftloop_cli.generate import fail
from driftloop_cli.status import status as status_command
from driftloop_cli.train import train as train_command
from driftloop_common.contracts.errors import DriftloopError
from driftloop_common.contracts.events import (
    Event,
    ModelKey,
    ModelType,
    Payload,
    RollbackRequested,
    RollbackRequestedEvent,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.logs import configure_logging

app = typer.Typer(
    name="driftloop",
    help="driftloop keeps contact-center models accurate: drift → retrain → evaluate → promote.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
publish_app = typer.Typer(
    help="Publish an event by hand (retraining, rollback, any event file).", no_args_is_help=True
)
kafka_app = typer.Typer(
    help="Run a local single-node Apache Kafka broker (KRaft, 127.0.0.1).", no_args_is_help=True
)
topics_app = typer.Typer(help="Manage driftloop's Kafka topics.", no_args_is_help=True)
app.add_typer(publish_app, name="publish")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
generate_commands.register(app)
lead_commands.register(app)
app.command("train")(train_command)
app.command("status")(status_command)

out = Console()
err = Console(stderr=True)

Bootstrap = kafka_io.BootstrapOpt
ModelTypeOpt = Annotated[ModelType, typer.Option("--model-type", "-m", help="Model family.")]
LanguageOpt = Annotated[
    str, typer.Option("--language", "-l", help="Language as a BCP 47 tag, e.g. en-us, es-es.")
]
RequestedByOpt = Annotated[
    str,
    typer.Option(
        help="Who asks; defaults to $USER.", envvar="USER", callback=lambda who: who or "cli"
    ),
]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    configure_logging("DEBUG" if verbose else "WARNING", json=False)


def _send(event: Event, bootstrap: str | None) -> None:
    server = kafka_io.resolve_bootstrap(bootstrap)
    try:
        partition, offset = kafka_io.publish(kafka_io.kafka_settings(server), event)
    except DriftloopError as exc:
        raise fail(str(exc)) from exc
    err.print(
        f"published {event.event_type} for {event.model_key} to {event.topic} "
        f"(partition {partition}, offset {offset})",
        highlight=False,
    )
    out.print(str(event.event_id), highlight=False)  # stdout: just the id, for scripts


def _request(
    event_type: type[Event],
    model_type: ModelType,
    language: str,
    payload: Payload,
    bootstrap: str | None,
) -> None:
    """Send a request about one model, made by hand (`producer` cli)."""
    try:
        key = ModelKey(model_type=model_type, language=language)
    except ValueError as exc:
        raise fail(f"--language: {exc}", 2) from exc
    _send(event_type(producer="cli", model_key=key, payload=payload), bootstrap)


# ------------------------------------------------------------------ publish
@publish_app.command("retrain")
def publish_retrain(
    model_type: ModelTypeOpt,
    language: LanguageOpt,
    reason: Annotated[
        str | None, typer.Option("--reason", "-r", help="Why (kept with the training run).")
    ] = None,
    requested_by: RequestedByOpt = "cli",
    bootstrap: Bootstrap = None,
) -> None:
    """Ask the trainer to retrain one model now (a `training.requested` event, reason manual)."""
    payload = TrainingRequested(
        reason=TrainingReason.MANUAL, requested_by=requested_by, note=reason
    )
    _request(TrainingRequestedEvent, model_type, language, payload, bootstrap)


@publish_app.command("rollback")
def publish_rollback(
    model_type: ModelTypeOpt,
    language: LanguageOpt,
    to_version: Annotated[
        int | None,
        typer.Option(
            "--to-version", min=1, help="Registry version to restore (default: previous)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why.")] = "requested by hand",
    requested_by: RequestedByOpt = "cli",
    bootstrap: Bootstrap = None,
) -> None:
    """Ask the promoter to roll one model back (a `rollback.requested` event)."""
    payload = RollbackRequested(reason=reason, requested_by=requested_by, to_version=to_version)
    _request(RollbackRequestedEvent, model_type, language, payload, bootstrap)


@publish_app.command("event")
def publish_event(
    file: Annotated[
        Path,
        typer.Argument(help="A JSON file holding one event (envelope + payload); - for stdin."),
    ],
    bootstrap: Bootstrap = None,
) -> None:
    """Validate an event file against the schema and send it to its event type's topic.

    An invalid file is reported field by field and nothing is sent.
    """
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}", 2) from exc
    try:
        event = decode_event(raw)
    except DriftloopError as exc:
        raise fail(f"invalid event in {file}: {exc}", 2) from exc
    _send(event, bootstrap)


# ------------------------------------------------------------------ tail
@app.command("tail")
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read, e.g. training.requested or audit.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest message, not the newest.")
    ] = False,
    max_messages: Annotated[
        int | None, typer.Option("--max-messages", "-n", min=1, help="Stop after N messages.")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option("--idle-timeout", help="Stop after this many seconds without a message."),
    ] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Print a topic's messages as JSON lines (key, headers, value); commits nothing."""
    server = kafka_io.resolve_bootstrap(bootstrap)
    try:
        kafka_io.tail(
            kafka_io.kafka_settings(server),
            topic,
            from_beginning=from_beginning,
            max_messages=max_messages,
            idle_timeout_s=idle_timeout,
            on_message=lambda m: print(m.as_json(), flush=True),
        )
    except DriftloopError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass


# ------------------------------------------------------------------ topics
@topics_app.command("create")
def topics_create(
    partitions: Annotated[int, typer.Option(min=1, help="Partitions per topic.")] = 3,
    replication_factor: Annotated[int, typer.Option(min=1, help="Replicas per partition.")] = 1,
    bootstrap: Bootstrap = None,
) -> None:
    """Create every driftloop topic and its `.dlq` twin (existing ones are left alone)."""
    import asyncio

    from driftloop_common.runtime.kafka import create_topics

    server = kafka_io.resolve_bootstrap(bootstrap)
    try:
        created = asyncio.run(
            create_topics(
                kafka_io.kafka_settings(server),
                partitions=partitions,
                replication_factor=replication_factor,
            )
        )
    except DriftloopError as exc:
        raise fail(str(exc)) from exc
    out.print(
        f"created {len(created)} topic(s) on {server}"
        + (f": {', '.join(created)}" if created else "")
    )


# ------------------------------------------------------------------ kafka
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Broker folder (config, data, log). Default: ~/.local/state/driftloop/kafka.",
        envvar="DRIFTLOOP_KAFKA_DATA_DIR",
    ),
]


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Download the broker's jars from Maven Central into the cache (once; reused after)."""
    from driftloop_local.kafka import KAFKA_VERSION, fetch_jars

    with err.status(f"fetching Apache Kafka {KAFKA_VERSION} jars with Maven…"):
        try:
            libs = fetch_jars()
        except DriftloopError as exc:
            raise fail(str(exc)) from exc
    out.print(str(libs), highlight=False)


@kafka_app.command("start")
def kafka_start(
    port: Annotated[
        int | None,
        typer.Option(
            help="Port on 127.0.0.1 (default: the previous one, else a free one).",
            envvar="DRIFTLOOP_KAFKA_PORT",
        ),
    ] = None,
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 120.0,
) -> None:
    """Fetch Kafka's jars (first time only), format storage and start the broker."""
    from driftloop_local.kafka import KAFKA_VERSION, LocalKafka

    broker = LocalKafka(data_dir, port=port)
    with err.status(f"starting Apache Kafka {KAFKA_VERSION} (first run fetches jars with Maven)…"):
        try:
            bootstrap = broker.start(timeout_s=timeout)
        except DriftloopError as exc:
            raise fail(str(exc)) from exc
    err.print(f"Kafka running on {bootstrap} (log: {broker.log_file})", highlight=False)
    out.print(bootstrap, highlight=False)


@kafka_app.command("stop")
def kafka_stop(
    data_dir: DataDir = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="Also delete its topics and data.")] = False,
) -> None:
    """Stop the local broker cleanly (SIGTERM, then SIGKILL after 30 s)."""
    from driftloop_local.kafka import LocalKafka

    broker = LocalKafka(data_dir)
    stopped = broker.stop()
    if wipe:
        broker.wipe()
    err.print(("stopped" if stopped else "not running") + (", data wiped" if wipe else ""))


@kafka_app.command("status")
def kafka_status(data_dir: DataDir = None) -> None:
    """Say whether the local broker runs, where, and where its log is. Exit 1 if stopped."""
    from driftloop_local.kafka import LocalKafka, broker_answers

    status = LocalKafka(data_dir).status()
    answers = status.running and status.bootstrap and broker_answers(status.bootstrap)
    out.print(
        status.describe()
        + ("" if not status.running else ("; answering" if answers else "; NOT answering")),
        highlight=False,
    )
    out.print(f"log: {status.log_file}", highlight=False)
    if not answers:
        raise typer.Exit(1)


# ------------------------------------------------------------------ services
@app.command("service")
def service(
    name: Annotated[str, typer.Argument(help="Which service to run (see `driftloop up`).")],
) -> None:
    """Run one service in the foreground (settings from DRIFTLOOP_* variables)."""
    from driftloop_cli.local import SERVICES

    if name not in SERVICES:
        raise fail(f"unknown service {name!r}; known: {', '.join(SERVICES)}", 2)
    importlib.import_module(SERVICES[name]).main()


@app.command("up")
def up(
    port: Annotated[int | None, typer.Option(help="Kafka port on 127.0.0.1.")] = None,
    data_dir: DataDir = None,
    exit_when_ready: Annotated[
        bool,
        typer.Option("--exit-when-ready", help="Check everything answers, then stop (smoke test)."),
    ] = False,
    demo: Annotated[
        bool,
        typer.Option(help="Stream six days of synthetic Genesys traffic with a drift in it."),
    ] = True,
) -> None:
    """Run the whole loop on this machine: Kafka, topics, every service. Ctrl-C stops it.

    Each decision of the loop (drift, training requests, …) is printed as it happens."""
    from driftloop_cli.local import run_local

    try:
        code = run_local(
            port=port, data_dir=data_dir, exit_when_ready=exit_when_ready, console=err, demo=demo
        )
    except DriftloopError as exc:
        raise fail(str(exc)) from exc
    raise typer.Exit(code)


# ------------------------------------------------------------------ simulator
@app.command("simulator")
def simulator(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: $DRIFTLOOP_SIM_HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port (default: $DRIFTLOOP_SIM_PORT, else 8089)."),
    ] = None,
) -> None:
    """Run the Genesys Cloud simulator (OAuth, NLU domains, model-config API, limits, faults).

    Settings from DRIFTLOOP_SIM_* variables; faults at run time through /admin/faults."""
    from driftloop_simulator import load_settings, serve

    try:
        settings = load_settings()
    except DriftloopError as exc:
        raise fail(str(exc), 2) from exc
    serve(settings, host=host, port=port)
