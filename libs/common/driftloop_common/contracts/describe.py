"""One line per event for people: what happened to which model, and why.

The auditor writes it into each audit record, the CLI prints it as the loop runs:

    intent/en-us  drift (major) over 500 interactions: psi_mean 0.412 > 0.120
    intent/en-us  training requested (drift) by drift-monitor
    intent/en-us  v4 evaluation failed: macro-F1 0.81 < champion 0.80 + 0.03

Each payload type has one case in `_what`; an event type without one is named by its
`event_type`.
"""

from __future__ import annotations

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
    Prediction,
    PromotionFailed,
    RollbackRequested,
    TrainingFailed,
    TrainingRequested,
)


def describe(event: Event) -> str:
    """`<model key>  <what happened>`, on one line."""
    return f"{event.model_key}  {_what(event.payload) or event.event_type}"


def _what(p: object) -> str | None:
    match p:
        case InteractionRaw():
            return f"interaction {p.conversation_id} completed" + _labelled(p.label)
        case InteractionEmbedded():
            encoder = f"{p.encoder.id} ({p.encoder.precision})"
            return f"interaction {p.conversation_id} embedded by {encoder}" + _labelled(p.label)
        case DriftDetected():
            fired = ", ".join(_score(s) for s in p.scores if s.fired) or "no detector fired"
            return f"drift ({p.psi_level}) over {p.window_size} interactions: {fired}"
        case TrainingRequested():
            why = f"new intent '{p.new_label}'" if p.new_label else p.reason.value
            note = f": {p.note}" if p.note else ""
            return f"training requested ({why}) by {p.requested_by}{note}"
        case TrainingFailed():
            return f"training failed: {p.reason}"
        case ModelTrained():
            f1 = p.metrics.get("test_macro_f1")
            score = f", test macro-F1 {f1:.3f}" if f1 is not None else ""
            return f"trained {p.registered_model} v{p.version} ({p.semver}), run {p.run_id}{score}"
        case ModelEvaluated():
            verdict = "passed" if p.passed else "failed: " + "; ".join(p.reasons)
            champion = f" against v{p.champion_version}" if p.champion_version else ""
            return f"v{p.version} evaluation{champion} {verdict}"
        case ModelPromoted():
            previous = f" (was v{p.previous_version})" if p.previous_version else ""
            if p.stage == "canary":
                share = f"{p.share_percent:g} %" if p.share_percent is not None else "a share"
                return f"v{p.version} is canary for {share} of conversations"
            if p.stage == "shadow":
                return f"v{p.version} is shadow: scored beside the champion, never answered"
            return f"v{p.version} promoted to {', '.join(p.targets)}{previous}"
        case PromotionFailed():
            return f"v{p.version} promotion to {p.target} failed: {p.error}"
        case RollbackRequested():
            target = f" to v{p.to_version}" if p.to_version else ""
            of = f" of v{p.from_version}" if p.from_version else ""
            return f"rollback{of}{target} requested by {p.requested_by}: {p.reason}"
        case ModelRolledBack():
            if p.stage != "champion":
                ended = f"the {p.stage} stage of v{p.from_version} ended"
                return f"{ended}, v{p.to_version} stays: {p.reason}"
            return f"rolled back from v{p.from_version} to v{p.to_version}: {p.reason}"
        case Prediction():
            about = f" for {p.conversation_id}" if p.conversation_id else ""
            return (
                f"v{p.version} predicted '{p.label}' ({p.confidence:.2f}){about} on {p.served_by}"
            )
        case Audit():
            return f"audit: {p.action} by {p.actor} on {p.subject}"
    return None


def _labelled(label: str | None) -> str:
    return f", labelled '{label}'" if label else ""


def _score(s: DetectorScore) -> str:
    bound = f" > {s.null_quantile:.3f}" if s.null_quantile is not None else ""
    return f"{s.statistic} {s.value:.3f}{bound}"
