"""One line per event for people: what happened to which model, and why.

The auditor writes it into each audit record, the CLI prints it as the loop runs:

    intent/en-us  drift (major) over 500 interactions: psi_mean 0.412 > 0.120
    intent/en-us  training requested (drift) by drift-monitor
    intent/en-us  v4 evaluation failed: macro-F1 0.81 < champion 0.80 + 0.03

Each payload type has one registered line (`_line`); an event type without one is
named by its `event_type`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from driftloop_common.contracts.events import (
    Audit,
    DetectorScore,
    DriftDetected,
    Event,
    InteractionEmbedded,
    InteractionRaw,
    ModelEvaluated,
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    Payload,
    Prediction,
    PromotionFailed,
    RollbackRequested,
    TrainingFailed,
    TrainingRequested,
)

P = TypeVar("P", bound=Payload)

_LINES: dict[type[Payload], Callable[[Any], str]] = {}


def describe(event: Event) -> str:
    """`<model key>  <what happened>`, on one line."""
    line = _LINES.get(type(event.payload))
    return f"{event.model_key}  {line(event.payload) if line else event.event_type}"


def _line(payload_type: type[P]) -> Callable[[Callable[[P], str]], Callable[[P], str]]:
    def register(fn: Callable[[P], str]) -> Callable[[P], str]:
        _LINES[payload_type] = fn
        return fn

    return register


@_line(InteractionRaw)
def _interaction_raw(p: InteractionRaw) -> str:
    return f"interaction {p.conversation_id} completed" + _labelled(p.label)


@_line(InteractionEmbedded)
def _interaction_embedded(p: InteractionEmbedded) -> str:
    encoder = f"{p.encoder.id} ({p.encoder.precision})"
    return f"interaction {p.conversation_id} embedded by {encoder}" + _labelled(p.label)


@_line(DriftDetected)
def _drift(p: DriftDetected) -> str:
    fired = ", ".join(_score(s) for s in p.scores if s.fired) or "no detector fired"
    return f"drift ({p.psi_level}) over {p.window_size} interactions: {fired}"


@_line(TrainingRequested)
def _training_requested(p: TrainingRequested) -> str:
    why = f"new intent '{p.new_label}'" if p.new_label else p.reason.value
    note = f": {p.note}" if p.note else ""
    return f"training requested ({why}) by {p.requested_by}{note}"


@_line(TrainingFailed)
def _training_failed(p: TrainingFailed) -> str:
    return f"training failed: {p.reason}"


@_line(ModelTrained)
def _trained(p: ModelTrained) -> str:
    f1 = p.metrics.get("test_macro_f1")
    score = f", test macro-F1 {f1:.3f}" if f1 is not None else ""
    return f"trained {p.registered_model} v{p.version} ({p.semver}), run {p.run_id}{score}"


@_line(ModelEvaluated)
def _evaluated(p: ModelEvaluated) -> str:
    verdict = "passed" if p.passed else "failed: " + "; ".join(p.reasons)
    champion = f" against v{p.champion_version}" if p.champion_version else ""
    return f"v{p.version} evaluation{champion} {verdict}"


@_line(ModelPromoted)
def _promoted(p: ModelPromoted) -> str:
    previous = f" (was v{p.previous_version})" if p.previous_version else ""
    return f"v{p.version} promoted to {', '.join(p.targets)}{previous}"


@_line(PromotionFailed)
def _promotion_failed(p: PromotionFailed) -> str:
    return f"v{p.version} promotion to {p.target} failed: {p.error}"


@_line(RollbackRequested)
def _rollback_requested(p: RollbackRequested) -> str:
    target = f" to v{p.to_version}" if p.to_version else ""
    return f"rollback{target} requested by {p.requested_by}: {p.reason}"


@_line(ModelRolledBack)
def _rolled_back(p: ModelRolledBack) -> str:
    return f"rolled back from v{p.from_version} to v{p.to_version}: {p.reason}"


@_line(Prediction)
def _prediction(p: Prediction) -> str:
    about = f" for {p.conversation_id}" if p.conversation_id else ""
    return f"v{p.version} predicted '{p.label}' ({p.confidence:.2f}){about} on {p.served_by}"


@_line(Audit)
def _audit(p: Audit) -> str:
    return f"audit: {p.action} by {p.actor} on {p.subject}"


def _labelled(label: str | None) -> str:
    return f", labelled '{label}'" if label else ""


def _score(s: DetectorScore) -> str:
    bound = f" > {s.null_quantile:.3f}" if s.null_quantile is not None else ""
    return f"{s.statistic} {s.value:.3f}{bound}"
