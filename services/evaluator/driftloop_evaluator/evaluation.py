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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    EncoderInfo,
    ModelEvaluated,
    ModelEvaluatedEvent,
    ModelTrainedEvent,
)
from driftloop_common.ml.modeling.metrics import (
    classification_scores,
    distribution_shift,
    regression_scores,
)
from driftloop_common.ml.modeling.pyfunc import TabularScorer, TextClassifier
from driftloop_common.ml.modeling.reports import markdown_table, per_class_f1_png
from driftloop_common.ml.modeling.splits import Window
from driftloop_common.ml.modeling.text_head import TextExamples
from driftloop_common.storage import registry
from driftloop_common.storage.examples import feature_rows, text_examples
from driftloop_common.storage.registry import Tag
from driftloop_evaluator.rules import Rules, Verdict, classification_verdict, regression_verdict

log = logging.getLogger(__name__)
SERVICE = "evaluator"


@dataclass(frozen=True)
class EvaluatorConfig:
    tracking_uri: str
    store_url: str
    rules: Rules = field(default_factory=Rules)
    shadow_hours: float = 24.0
    shadow_max_rows: int = 2000
    min_test_rows: int = 20
    registry_uri: str | None = None


@dataclass
class Outcome:
    verdict: Verdict
    metrics: dict[str, float]
    report: list[str]
    figures: dict[str, Any] = field(default_factory=dict)


class Evaluator:
    def __init__(self, config: EvaluatorConfig) -> None:
        self.config = config
        self.client = registry.client(config.tracking_uri, config.registry_uri)
        mlflow.set_tracking_uri(config.tracking_uri)  # `models:/` URIs resolve through it
        if config.registry_uri:
            mlflow.set_registry_uri(config.registry_uri)

    def evaluate(self, event: ModelTrainedEvent) -> ModelEvaluatedEvent:
        p = event.payload
        name = registered_model(event)
        uri = self.config.tracking_uri
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
        if isinstance(challenger_model, TabularScorer):
            outcome = self._tabular(language, test, challenger_model, champion_model)
        else:
            outcome = self._text(language, test, as_of, challenger_model, champion_model)
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

    # -------------------------------------------------------------- families

    def _text(
        self,
        language: str,
        window: Window,
        as_of: datetime,
        challenger: TextClassifier,
        champion: Any,
    ) -> Outcome:
        if champion is not None and not isinstance(champion, TextClassifier):
            champion = None  # a family change: nothing comparable (the semver says major)
        test = text_examples(self.config.store_url, language, window, challenger.encoder)
        if (short := self._too_few(window, len(test.texts))) is not None:
            return short
        ch_pred = _predict(challenger, test, challenger.encoder)
        ch_scores = classification_scores(test.labels, ch_pred["label"])
        metrics = {
            "test_rows": float(len(test.texts)),
            "challenger_macro_f1": ch_scores.macro_f1,
            "challenger_accuracy": ch_scores.accuracy,
            "challenger_test_confidence": float(ch_pred["confidence"].mean()),
        }
        cp_scores = None
        if champion is not None:
            cp_pred = _predict(champion, test, challenger.encoder)
            cp_scores = classification_scores(test.labels, cp_pred["label"])
            metrics |= {
                "champion_macro_f1": cp_scores.macro_f1,
                "champion_accuracy": cp_scores.accuracy,
                "champion_test_confidence": float(cp_pred["confidence"].mean()),
                "macro_f1_delta": ch_scores.macro_f1 - cp_scores.macro_f1,
            }
        shadow_window = Window(as_of - timedelta(hours=self.config.shadow_hours), as_of)
        shadow = text_examples(
            self.config.store_url, language, shadow_window, challenger.encoder, labelled=False
        )
        shadow = _newest(shadow, self.config.shadow_max_rows)
        metrics["shadow_rows"] = float(len(shadow.texts))
        agreement = None
        if shadow.texts:
            ch_shadow = _predict(challenger, shadow, challenger.encoder)
            metrics["challenger_shadow_confidence"] = float(ch_shadow["confidence"].mean())
            if champion is not None:
                cp_shadow = _predict(champion, shadow, challenger.encoder)
                agreement = float(np.mean(ch_shadow["label"] == cp_shadow["label"]))
                metrics |= {
                    "shadow_agreement": agreement,
                    "shadow_label_shift": distribution_shift(
                        list(ch_shadow["label"]), list(cp_shadow["label"])
                    ),
                    "champion_shadow_confidence": float(cp_shadow["confidence"].mean()),
                }
        # The live level to guard: recent traffic when there is some, else the test rows.
        metrics["confidence"] = metrics.get(
            "challenger_shadow_confidence", metrics["challenger_test_confidence"]
        )
        verdict = classification_verdict(
            ch_scores, cp_scores, self.config.rules, agreement=agreement
        )
        rows = [
            [label, f1, cp_scores.per_class_f1.get(label, 0.0) if cp_scores else "", n]
            for label, f1 in sorted(ch_scores.per_class_f1.items())
            for n in [ch_scores.support[label]]
        ]
        report = [
            markdown_table(["class", "challenger F1", "champion F1", "support"], rows),
            "![per-class F1](per_class_f1.png)",
        ]
        figures = {
            "per_class_f1.png": (
                ch_scores.per_class_f1,
                cp_scores.per_class_f1 if cp_scores else None,
            )
        }
        return Outcome(verdict, metrics, report, figures)

    def _tabular(
        self, language: str, window: Window, challenger: TabularScorer, champion: Any
    ) -> Outcome:
        from driftloop_common.ml.modeling.tabular import LEAD_SCORE_SPEC

        if champion is not None and not isinstance(champion, TabularScorer):
            champion = None
        rows = feature_rows(self.config.store_url, language, window, LEAD_SCORE_SPEC.target)
        if (short := self._too_few(window, len(rows))) is not None:
            return short
        truth = rows[LEAD_SCORE_SPEC.target].to_numpy(dtype=float)
        ch = regression_scores(truth, challenger.predict(None, rows)["score"].to_numpy())
        metrics = {"test_rows": float(len(rows))} | {f"challenger_{k}": v for k, v in ch.items()}
        cp = None
        if champion is not None:
            cp = regression_scores(truth, champion.predict(None, rows)["score"].to_numpy())
            metrics |= {f"champion_{k}": v for k, v in cp.items()}
        verdict = regression_verdict(ch, cp, self.config.rules)
        table = [[k, ch[k], cp[k] if cp else ""] for k in ("rmse", "mae", "r2")]
        report = [markdown_table(["metric", "challenger", "champion"], table)]
        return Outcome(verdict, metrics, report)

    # ------------------------------------------------------------- internals

    def _too_few(self, window: Window, rows: int) -> Outcome | None:
        """Too few labelled rows to judge: a failed verdict that says so (not a retry:
        the window's rows will not appear later)."""
        if rows >= self.config.min_test_rows:
            return None
        verdict = Verdict()
        verdict.check(
            "test_rows",
            False,
            f"the test window {window} holds {rows} labelled rows "
            f"(needs ≥ {self.config.min_test_rows})",
        )
        return Outcome(verdict, {"test_rows": float(rows)}, [])

    def _load(self, name: str, version: str) -> Any:
        uri = self.config.tracking_uri
        with registry.translated(
            f"loading {name} v{version}", uri=uri, missing="version_not_found"
        ):
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        return loaded.unwrap_python_model()

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
            uri=self.config.tracking_uri,
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


def _predict(model: TextClassifier, examples: TextExamples, stored: EncoderInfo) -> Any:
    """The store's vectors when the model's encoder made them, else its own encoder."""
    if model.encoder == stored:
        return model.predict_examples(examples)
    return model.predict(None, examples.texts)


def _newest(examples: TextExamples, n: int) -> TextExamples:
    if len(examples.texts) <= n:
        return examples
    return TextExamples(examples.texts[-n:], examples.embeddings[-n:], None)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)
