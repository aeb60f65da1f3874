"""One training: a request → temporal splits → a fitted model → an MLflow run and version.

`Trainer.train` is what the service runs for each `training.requested` and what
`driftloop train` runs from the command line. It returns the event to publish:
`model.trained` (a new version aliased `challenger`) or `training.failed` (with the reason
and the row counts) when the data cannot make a model.

Idempotent: the version is tagged with the request's event id; a request that already
produced a version (a redelivery, or a crash after registration) returns that version's
`model.trained` again instead of training twice. The check runs before training and again
right before registering: after a rebalance two members can train the same request at
once, and the first version registered wins (the other run is deleted, tagged
`driftloop.duplicate_of`, and its member publishes the winner's `model.trained`).

The request's time T is input: one no split window can be computed for (year 1), or more
than `max_as_of_ahead` after now (year 9999), is refused with `InvalidAsOf` (→ DLQ).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from pydantic import Field

from driftloop_common.contracts.errors import CannotTrainError, RetryableError
from driftloop_common.contracts.events import (
    Event,
    ModelTrained,
    ModelTrainedEvent,
    TrainingFailed,
    TrainingFailedEvent,
    TrainingRequestedEvent,
)
from driftloop_common.families import Family, FamilyOptions, family_for
from driftloop_common.families.base import FittedModel
from driftloop_common.ml.modeling.splits import EPOCH, InvalidAsOf, SplitConfig, Window
from driftloop_common.runtime.settings import MlflowSettings, default_store_url
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag, VersionFacts

log = logging.getLogger(__name__)
SERVICE = "trainer"

Progress = Callable[[str], None]


class TrainerConfig(FamilyOptions, SplitConfig):
    """What a training reads besides the request: the trainer's settings carry it (one
    `DRIFTLOOP_…` variable per field), tests and `driftloop train` build it directly."""

    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    store_url: str = Field(default_factory=default_store_url)  # interactions and feature tables
    min_train_rows: int = Field(default=200, gt=0)
    min_validation_rows: int = Field(default=50, gt=0)
    min_test_rows: int = Field(default=50, gt=0)
    seed: int = 0
    # A request whose as_of (or occurred_at) lies further ahead of now is dead-lettered.
    max_as_of_ahead_hours: float = Field(default=24.0, ge=0)

    @property
    def min_rows(self) -> dict[str, int]:
        return {
            "train": self.min_train_rows,
            "validation": self.min_validation_rows,
            "test": self.min_test_rows,
        }

    @property
    def max_as_of_ahead(self) -> timedelta:
        return timedelta(hours=self.max_as_of_ahead_hours)


def request_time(
    request: TrainingRequestedEvent, config: TrainerConfig, now: datetime | None = None
) -> datetime:
    """The request's T (`as_of`, else when it was made), or `InvalidAsOf` when the request's
    times make no sense: later than `max_as_of_ahead` after now (no data exists for it; an
    `occurred_at` there would also never be coalesced), a request made before the epoch
    (it would be coalesced away for good), or a T whose split windows cannot be computed."""
    limit = (now or datetime.now(UTC)) + config.max_as_of_ahead
    for what, moment in (("as_of", request.payload.as_of), ("occurred_at", request.occurred_at)):
        if moment is not None and moment > limit:
            raise InvalidAsOf(
                f"{what} {moment.isoformat()} is more than {config.max_as_of_ahead} "
                "after now: no data exists for it"
            )
    if request.occurred_at < EPOCH:
        raise InvalidAsOf(f"occurred_at {request.occurred_at.isoformat()} is before {EPOCH}")
    as_of = request.payload.as_of or request.occurred_at
    config.windows(as_of)  # raises InvalidAsOf
    return as_of


class Trainer:
    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.client: MlflowClient = registry.client(
            config.mlflow.tracking_uri, config.mlflow.registry_uri
        )

    # ------------------------------------------------------------------ public

    def train(self, request: TrainingRequestedEvent, progress: Progress | None = None) -> Event:
        """Train for `request`; returns `model.trained` or `training.failed`."""
        say = progress or (lambda step: log.info("%s: %s", request.model_key, step))
        started = datetime.now(UTC)
        if (done := self.existing(request)) is not None:
            say(f"request {request.event_id} already produced version {done.payload.version}")
            return done
        as_of = self.as_of(request)
        windows = self.config.windows(as_of)
        family = family_for(request.model_key.model_type, self.config.store_url, self.config)
        try:
            say(f"reading {family.name} data for {request.model_key} as of {as_of:%Y-%m-%d %H:%M}")
            data = family.load(request.model_key, windows)
            data.check(self.config.min_rows)
            say(f"fitting on {data.counts()} rows")
            fitted = family.fit(data, seed=self.config.seed, progress=say)
        except CannotTrainError as exc:
            log.warning("cannot train %s: %s %s", request.model_key, exc.reason, exc.counts)
            return request.follow_up(
                TrainingFailedEvent,
                producer=SERVICE,
                payload=TrainingFailed(
                    request_event_id=request.event_id, reason=exc.reason, counts=exc.counts
                ),
            )
        say("logging the run and registering the version")
        return self._record(request, as_of, windows, family, fitted, started)

    def as_of(self, request: TrainingRequestedEvent) -> datetime:
        return request_time(request, self.config)

    def last_started(self, request: TrainingRequestedEvent) -> datetime | None:
        """When the newest *completed* training of this model key started (coalescing
        reads it). A run that failed midway covers no request."""
        name = request.model_key.registered_model
        with registry.translated(
            f"reading the runs of {name}", uri=self.config.mlflow.tracking_uri
        ):
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                return None
            runs = self.client.search_runs(
                [experiment.experiment_id],
                filter_string=(
                    f"tags.`{Tag.MODEL_KEY}` = '{request.model_key}' "
                    "AND attributes.status = 'FINISHED'"
                ),
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        if not runs:
            return None
        return datetime.fromtimestamp(runs[0].info.start_time / 1000, UTC)

    def existing(self, request: TrainingRequestedEvent) -> Event | None:
        """The `model.trained` of a version this request already produced, if any.

        A crash between registering and aliasing leaves the newest version without its
        `challenger` alias: it is set here again."""
        name = request.model_key.registered_model
        with registry.translated(
            f"reading the version of request {request.event_id}",
            uri=self.config.mlflow.tracking_uri,
        ):
            version = self._first_version(request)
            if version is None:
                return None
            latest = registry.latest_version(self.client, name)
            if latest is not None and latest.version == version.version:
                self.client.set_registered_model_alias(name, registry.CHALLENGER, version.version)
            run = self.client.get_run(version.run_id)
        return self._trained_event(request, version, run.data.metrics)

    # --------------------------------------------------------------- internals

    def _first_version(self, request: TrainingRequestedEvent) -> Any:
        name = request.model_key.registered_model
        return registry.version_for_request(self.client, name, str(request.event_id))

    def _trained_event(
        self, request: TrainingRequestedEvent, version: Any, metrics: dict[str, float]
    ) -> Event:
        return request.follow_up(
            ModelTrainedEvent,
            producer=SERVICE,
            payload=ModelTrained(
                request_event_id=request.event_id,
                registered_model=version.name,
                version=int(version.version),
                semver=version.tags.get(Tag.SEMVER, "0.0.0"),
                run_id=version.run_id,
                labels=registry.labels_of(version),
                metrics={k: v for k, v in metrics.items() if "." not in k},
            ),
        )

    def _record(
        self,
        request: TrainingRequestedEvent,
        as_of: datetime,
        windows: dict[str, Window],
        family: Family,
        fitted: FittedModel,
        started: datetime,
    ) -> Event:
        name = request.model_key.registered_model
        with registry.translated(
            f"preparing the run of {name}", uri=self.config.mlflow.tracking_uri
        ):
            experiment_id = registry.ensure_experiment(self.client, name)
            previous = registry.latest_version(self.client, name)
        facts = VersionFacts(family=family.name, encoder=family.encoder_id, labels=fitted.labels)
        semver = registry.next_semver(
            previous.tags.get(Tag.SEMVER) if previous else None,
            VersionFacts.from_tags(previous.tags) if previous else None,
            facts,
        )
        tags = {
            Tag.MODEL_KEY: str(request.model_key),
            Tag.REQUEST: str(request.event_id),
            Tag.CORRELATION: str(request.correlation_id),
            Tag.REASON: request.payload.reason.value,
            Tag.SEMVER: semver,
            **facts.tags(),
        }
        params = {
            "as_of": as_of.isoformat(),
            **{f"{split}_start": w.start.isoformat() for split, w in windows.items()},
            **{f"{split}_end": w.end.isoformat() for split, w in windows.items()},
            **{f"{split}_rows": n for split, n in fitted.counts.items()},
            "requested_by": request.payload.requested_by,
            **{f"head.{k}": v for k, v in fitted.params.items()},
        }
        mlflow.set_tracking_uri(self.config.mlflow.tracking_uri)
        if self.config.mlflow.registry_uri:
            mlflow.set_registry_uri(self.config.mlflow.registry_uri)
        run_name = f"{request.payload.reason.value}-{as_of:%Y%m%dT%H%M}"
        earlier = None  # a version of this request another member registered meanwhile
        try:
            with registry.translated(
                f"recording the training of {name}", uri=self.config.mlflow.tracking_uri
            ):
                # The run starts when the training started (before reading data): coalescing
                # compares request times with it.
                created = self.client.create_run(
                    experiment_id,
                    start_time=int(started.timestamp() * 1000),
                    tags=tags,
                    run_name=run_name,
                )
                with (
                    mlflow.start_run(run_id=created.info.run_id) as run,
                    tempfile.TemporaryDirectory() as tmp,
                ):
                    mlflow.log_params({k: _param(v) for k, v in params.items()})
                    mlflow.log_metrics(fitted.metrics)
                    folder = Path(tmp)
                    family.write_artifacts(fitted, folder)
                    (folder / "labels.json").write_text(json.dumps(sorted(fitted.labels), indent=1))
                    (folder / "report.md").write_text(
                        report_header(request, semver, windows) + family.report(fitted)
                    )
                    mlflow.log_artifacts(str(folder))
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=fitted.pyfunc,
                        pip_requirements=family.pip_requirements(),
                        signature=fitted.signature,
                        input_example=fitted.input_example,
                        artifacts=fitted.model_artifacts,
                    )
                    # Checked again: after a rebalance another member may have trained this
                    # request while this one did, and registered first.
                    earlier = self._first_version(request)
                    if earlier is None:
                        version = mlflow.register_model(info.model_uri, name, tags=tags)
                        # Both may have passed the check at once: the oldest version wins.
                        first = self._first_version(request)
                        if first is not None and first.version != version.version:
                            self.client.delete_model_version(name, version.version)
                            earlier = first
                    if earlier is None:
                        self.client.set_registered_model_alias(
                            name, registry.CHALLENGER, version.version
                        )
                        mlflow.set_tag(Tag.VERSION, version.version)
                    else:
                        mlflow.set_tag(Tag.DUPLICATE_OF, earlier.version)
                if earlier is not None:
                    self.client.delete_run(run.info.run_id)
        finally:
            for path in (fitted.model_artifacts or {}).values():
                shutil.rmtree(path, ignore_errors=True)  # logged with the version, or lost
        if earlier is not None:
            log.warning(
                "%s: request %s was trained twice (a rebalance); version %s registered by "
                "another run stands, run %s is deleted",
                name,
                request.event_id,
                earlier.version,
                run.info.run_id,
            )
            if (done := self.existing(request)) is None:
                raise RetryableError(f"{name} v{earlier.version} vanished while it was read")
            return done
        log.info(
            "%s: version %s (%s) registered from run %s as %s",
            name,
            version.version,
            semver,
            run.info.run_id,
            registry.CHALLENGER,
        )
        with registry.translated(
            f"reading {name} v{version.version}", uri=self.config.mlflow.tracking_uri
        ):
            version = self.client.get_model_version(name, version.version)
        return self._trained_event(request, version, fitted.metrics)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a param value


def report_header(request: TrainingRequestedEvent, semver: str, windows: dict[str, Window]) -> str:
    """The run's facts, above the family's report: what was asked, by whom, on which days."""
    payload = request.payload
    lines = [
        f"# {request.model_key.registered_model} {semver}",
        "",
        f"- requested: {payload.reason.value} by {payload.requested_by}"
        + (f" ({payload.note})" if payload.note else ""),
        f"- request event: `{request.event_id}`, correlation `{request.correlation_id}`",
        *(f"- {split} window: {window}" for split, window in windows.items()),
        "",
        "",
    ]
    return "\n".join(lines)
