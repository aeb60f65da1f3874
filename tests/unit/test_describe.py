"""`describe(event)`: one line per event type naming the model and what happened to it.

The events are `test_events.EXAMPLES`, one of each type; the facts below are theirs."""

from __future__ import annotations

import pytest

from driftloop_common.contracts.describe import describe
from driftloop_common.contracts.events import (
    EVENT_TYPES,
    DetectorScore,
    Event,
    ModelEvaluated,
    TrainingReason,
    TrainingRequested,
)
from tests.unit.test_events import EXAMPLES

EXAMPLE = {e.event_type: e for e in EXAMPLES}

# event type → what its example's line must name besides the model key
FACTS: dict[str, tuple[str, ...]] = {
    "interaction.raw": ("c1", "card_lost"),
    "interaction.embedded": ("c1", "sentence-transformers/all-MiniLM-L6-v2", "fp32"),
    "drift.detected": ("stable", "2000", "mean", "0.012", "0.008"),
    "training.requested": ("drift", "drift-monitor"),
    "training.failed": ("failed", "too few rows in test split"),
    "model.trained": ("intent-en-us", "3", "1.1.0", "abc", "0.910"),
    "model.evaluated": ("3", "2", "failed", "macro-F1 0.91 < champion 0.90 + 0.03"),
    "model.promoted": ("3", "2", "predictor"),
    "promotion.failed": ("3", "genesys", "failed", "429"),
    "rollback.requested": ("2", "rollback-watcher", "confidence dropped"),
    "model.rolled_back": ("3", "2", "confidence"),
    "prediction": ("3", "billing", "0.70", "predictor"),
    "audit": ("model.promoted", "promoter"),
}


def _line_has(event: Event, *facts: str) -> None:
    line = describe(event)
    assert "\n" not in line
    assert line.startswith(str(event.model_key))
    missing = [fact for fact in facts if fact not in line]
    assert not missing, f"{line!r} lacks {missing}"


def test_every_event_type_has_its_facts() -> None:
    assert set(FACTS) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(FACTS))
def test_the_line_names_the_model_and_the_facts(event_type: str) -> None:
    _line_has(EXAMPLE[event_type], *FACTS[event_type])


def test_a_request_for_a_new_intent_names_the_intent_and_the_note() -> None:
    payload = TrainingRequested(
        reason=TrainingReason.NEW_INTENT, requested_by="ana", new_label="refund", note="promo"
    )
    _line_has(
        EXAMPLE["training.requested"].model_copy(update={"payload": payload}), "refund", "promo"
    )


def test_a_passed_evaluation_says_so() -> None:
    payload = ModelEvaluated(registered_model="intent-en-us", version=4, passed=True)
    _line_has(EXAMPLE["model.evaluated"].model_copy(update={"payload": payload}), "4", "passed")


def test_only_fired_detectors_are_named_and_a_missing_quantile_still_reads() -> None:
    drift = EXAMPLE["drift.detected"]
    scores = [
        DetectorScore(detector="label", statistic="label_chi2", value=1.5, fired=False),
        DetectorScore(detector="component_psi", statistic="psi_max", value=0.3, fired=True),
    ]
    event = drift.model_copy(
        update={"payload": drift.payload.model_copy(update={"scores": scores})}
    )
    _line_has(event, "psi_max 0.300")
    assert "label_chi2" not in describe(event)
