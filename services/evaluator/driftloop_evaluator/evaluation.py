"""Challenger vs champion on the same newest rows, a shadow run on recent traffic, a verdict.

For `model.trained` (version v of model M):
1. the test window is the challenger's own (its run's `test_start`/`test_end`: the newest
   labelled days, never trained on); the champion is scored on exactly the same rows;
2. shadow: the most recent unlabelled interactions (`shadow_hours` before the challenger's
   `as_of`) go through both models: agreement, shift of the predicted-label distribution
   and each model's mean confidence — recorded always, a gate only when configured;
3. the rules (`rules.py`) decide; `model.evaluated` carries every number and every failed
   rule; the numbers, a markdown report and a per-class F1 figure go to the challenger's
   run, and the verdict and confidence level to the version's tags.

The challenger's mean confidence on recent traffic is the level the rollback-watcher later
compares live predictions against (`confidence` metric, `driftloop.confidence` tag).

Trust: loading a model unpickles it, so the registered model is derived from the event's
`model_key`, never taken from the payload: a payload naming another one is refused
(`model_mismatch`) before MLflow is asked anything. A version (or run) that does not exist
is permanent (`version_not_found`, → DLQ); MLflow down or failing is retried.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
from pydantic import Field

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelTrainedEvent,
)
from driftloop_common.families import family_for
from driftloop_common.families.base import Outcome
from driftloop_common.families.rules import EvaluationOptions
from driftloop_common.ml.modeling.reports import markdown_table, per_class_f1_png
from driftloop_common.ml.modeling.splits import Window
from driftloop_common.runtime.settings import MlflowSettings, default_store_url
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag

log = logging.getLogger(__name__)
SERVICE = "evaluator"


class EvaluatorConfig(EvaluationOptions):
    """What an evaluation reads besides the event: the rules and shadow options, MLflow
    and the store. The evaluator's settings carry it (one `DRIFTLOOP_…` variable each)."""

    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    store_url: str = Field(default_factory=default_store_url)


class Evaluator:
    def __init__(self, config: EvaluatorConfig) -> None:
        self.config = config
        self.uri = config.mlflow.tracking_uri
        self.client = registry.client(self.uri, config.mlflow.registry_uri)
        mlflow.set_tracking_uri(self.uri)  # `models:/` URIs resolve through it
        if config.mlflow.registry_uri:
            mlflow.set_registry_uri(config.mlflow.registry_uri)

    def evaluate(self, event: ModelTrainedEvent) -> ModelEvaluatedEvent:
        p = event.payload
        name = registered_model(event)
        uri = self.uri
        with registry.translated(
            f"reading {name} v{p.version}", uri=uri, missing="version_not_found"
        ):
            challenger = self.client.get_model_version(name, str(p.version))
        with registry.translated(
            f"reading the run of {name} v{p.version}", uri=uri, missing="run_not_found"
        ):
            params = self.client.get_run(challenger.run_id).data.params
        champion = registry.version_by_alias(self.client, name, registry.CHAMPION)
        if champion is not None and champion.version == challenger.version:
            champion = None  # already live (a re-evaluation): nothing to compare against
        try:
            test = Window(_time(params["test_start"]), _time(params["test_end"]))
            as_of = _time(params["as_of"])
        except KeyError as exc:
            raise PermanentError(
                f"{name} v{p.version}: its run lacks the parameter {exc} (not a driftloop run?)",
                code="not_driftloop_run",
            ) from exc
        language = event.model_key.language
        challenger_model = self._load(name, challenger.version)
        champion_model = self._load(name, champion.version) if champion else None
        family = family_for(event.model_key.model_type, self.config.store_url)
        outcome = family.evaluate(
            language, test, as_of, challenger_model, champion_model, self.config
        )
        verdict = outcome.verdict
        self._record(challenger, champion, outcome, event)
        log.info(
            "%s v%s %s%s",
            name,
            p.version,
            "passed" if verdict.passed else "failed: ",
            "; ".join(verdict.reasons),
        )
        return event.follow_up(
            ModelEvaluatedEvent,
            producer=SERVICE,
            payload=ModelEvaluated(
                registered_model=name,
                version=p.version,
                passed=verdict.passed,
                reasons=verdict.reasons,
                metrics=outcome.metrics,
                champion_version=int(champion.version) if champion else None,
            ),
        )

    # ------------------------------------------------------------- internals

    def _load(self, name: str, version: str) -> Any:
        return registry.load_version(self.uri, name, version)

    def _record(
        self, challenger: Any, champion: Any, outcome: Outcome, event: ModelTrainedEvent
    ) -> None:
        name, version = challenger.name, challenger.version
        verdict = outcome.verdict
        against = f"champion v{champion.version}" if champion else "no champion (floor only)"
        lines = [
            f"# Evaluation of {name} v{version} ({challenger.tags.get(Tag.SEMVER, '?')})",
            f"Against {against}. Verdict: **{'passed' if verdict.passed else 'failed'}**.",
            "\n".join(f"- {line}" for line in verdict.checks),
            markdown_table(["number", "value"], sorted(outcome.metrics.items())),
            *outcome.report,
        ]
        with registry.translated(
            f"recording the evaluation of {name} v{version}",
            uri=self.uri,
            missing="run_not_found",
        ):
            for key, value in outcome.metrics.items():
                self.client.log_metric(challenger.run_id, f"eval_{key}", value)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / "evaluation.md").write_text("\n\n".join(lines) + "\n")
                for file, (ch, cp) in outcome.figures.items():
                    per_class_f1_png(ch, cp, folder / file)
                self.client.log_artifacts(challenger.run_id, str(folder), "evaluation")
            self.client.set_model_version_tag(
                name, version, Tag.EVALUATION, "passed" if verdict.passed else "failed"
            )
            if "confidence" in outcome.metrics:
                self.client.set_model_version_tag(
                    name, version, Tag.CONFIDENCE, f"{outcome.metrics['confidence']:.6f}"
                )


def registered_model(event: ModelTrainedEvent) -> str:
    """The registered model `event` may name: its model key's. Anything else is refused
    before it is loaded (a pickle from a model this event has no business with)."""
    name = event.model_key.registered_model
    if event.payload.registered_model != name:
        raise PermanentError(
            f"model.trained for {event.model_key} names the registered model "
            f"{event.payload.registered_model!r}, not {name!r}",
            code="model_mismatch",
        )
    return name


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)
