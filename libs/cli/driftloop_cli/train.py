"""`driftloop train`: the trainer service's training, run from the command line.

Same code path as the service (`Trainer.train`): temporal split from the store, fit,
MLflow run, registered version aliased `challenger`. With `--publish` its `model.trained`
(or `training.failed`) also goes to Kafka, so the evaluator takes it from there.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from driftloop_cli import kafka_io
from driftloop_common.contracts.errors import DriftloopError
from driftloop_common.contracts.events import (
    ModelKey,
    ModelTrainedEvent,
    ModelType,
    TrainingFailedEvent,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
)

err = Console(stderr=True)
out = Console()


def _as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO date or time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def train(
    model_type: Annotated[ModelType, typer.Option("--model-type", "-m", help="Model family.")],
    language: Annotated[
        str, typer.Option("--language", "-l", help="Language as a BCP 47 tag, e.g. en-us.")
    ],
    store: Annotated[
        str | None,
        typer.Option(help="Interaction store URL (default: DRIFTLOOP_STORE_URL or the local one)."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Train as if it were this time (ISO date/time, UTC if no zone); default now.",
        ),
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option("--mlflow", help="MLflow tracking URI (default: DRIFTLOOP_MLFLOW__…)."),
    ] = None,
    note: Annotated[str | None, typer.Option(help="Why; kept with the run.")] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="Also publish the outcome to Kafka.")
    ] = False,
    bootstrap: kafka_io.BootstrapOpt = None,
) -> None:
    """Train one model now from the interaction store and register it as `challenger`."""
    from driftloop_common.runtime.settings import load_settings
    from driftloop_trainer.settings import TrainerSettings
    from driftloop_trainer.training import Trainer

    overrides: dict = {"store_url": store} if store else {}
    if mlflow_uri:
        overrides["mlflow"] = {"tracking_uri": mlflow_uri}
    try:
        key = ModelKey(model_type=model_type, language=language)
        settings = load_settings(TrainerSettings, **overrides)
    except (ValueError, DriftloopError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    request = TrainingRequestedEvent(
        producer="cli",
        model_key=key,
        payload=TrainingRequested(
            reason=TrainingReason.MANUAL, requested_by="cli", note=note, as_of=_as_of(as_of)
        ),
    )
    started = time.monotonic()
    with err.status(f"training {key}…") as status:

        def progress(step: str) -> None:
            err.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {step}", highlight=False)
            status.update(f"training {key}: {step}")

        try:
            result = Trainer(settings).train(request, progress)
        except DriftloopError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc
    if isinstance(result, TrainingFailedEvent):
        err.print(f"[bold red]training failed:[/] {result.payload.reason}", highlight=False)
        err.print(f"counts: {result.payload.counts}", highlight=False)
    elif isinstance(result, ModelTrainedEvent):
        p = result.payload
        table = Table(title=f"{p.registered_model} v{p.version} ({p.semver}), run {p.run_id}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in sorted(p.metrics.items()):
            table.add_row(name, f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}")
        err.print(table)
    if publish:
        server = kafka_io.resolve_bootstrap(bootstrap)
        kafka_io.publish(kafka_io.kafka_settings(server), result)
        err.print(f"published {result.event_type} to {result.topic}", highlight=False)
    out.print(str(result.event_id), highlight=False)
    if isinstance(result, TrainingFailedEvent):
        raise typer.Exit(1)
