"""The evaluator's decision table: each rule can fail on its own and is named when it does."""

from __future__ import annotations

import pytest

from driftloop_common.families.rules import Rules, classification_verdict, regression_verdict
from driftloop_common.ml.modeling.metrics import ClassificationScores, classification_scores


def scores(macro: float, per_class: dict[str, float]) -> ClassificationScores:
    return ClassificationScores(
        macro_f1=macro,
        accuracy=macro,
        per_class_f1=per_class,
        support=dict.fromkeys(per_class, 10),
        rows=10 * len(per_class),
    )


RULES = Rules(f1_delta=0.03, f1_floor=0.6, max_class_drop=0.10)
CHAMPION = scores(0.80, {"billing": 0.80, "cancel_order": 0.80})


def failed_rules(verdict) -> list[str]:
    return [reason.split(":", 1)[0] for reason in verdict.reasons]


def test_a_clearly_better_challenger_passes_every_rule() -> None:
    verdict = classification_verdict(
        scores(0.86, {"billing": 0.86, "cancel_order": 0.86}), CHAMPION, RULES
    )
    assert verdict.passed and verdict.reasons == []
    assert len(verdict.checks) == 3


@pytest.mark.parametrize(
    ("challenger", "rule"),
    [
        (scores(0.82, {"billing": 0.82, "cancel_order": 0.82}), "improvement"),
        (scores(0.88, {"billing": 0.99, "cancel_order": 0.65}), "class_drop"),
    ],
)
def test_each_rule_fails_on_its_own(challenger: ClassificationScores, rule: str) -> None:
    verdict = classification_verdict(challenger, CHAMPION, RULES)
    assert failed_rules(verdict) == [rule]


def test_the_class_drop_names_the_class_and_its_numbers() -> None:
    challenger = scores(0.88, {"billing": 0.99, "cancel_order": 0.65})
    (reason,) = classification_verdict(challenger, CHAMPION, RULES).reasons
    assert "cancel_order" in reason and "0.800 → 0.650" in reason
    assert "billing" not in reason


def test_the_floor_fails_alone_without_a_champion() -> None:
    verdict = classification_verdict(scores(0.55, {"a": 0.55}), None, RULES)
    assert failed_rules(verdict) == ["floor"]
    assert classification_verdict(scores(0.61, {"a": 0.61}), None, RULES).passed


def test_the_agreement_gate_only_when_configured() -> None:
    better = scores(0.9, {"billing": 0.9, "cancel_order": 0.9})
    assert classification_verdict(better, CHAMPION, RULES, agreement=0.2).passed
    gated = Rules(min_agreement=0.5)
    verdict = classification_verdict(better, CHAMPION, gated, agreement=0.2)
    assert failed_rules(verdict) == ["agreement"]


def test_a_class_the_champion_never_saw_cannot_count_as_a_drop() -> None:
    truth = ["a"] * 5 + ["new"] * 5
    champion = classification_scores(truth, ["a"] * 10)  # never predicts "new"
    challenger = classification_scores(truth, truth)
    assert classification_verdict(challenger, champion, RULES).passed


def test_tabular_rmse_must_improve_by_the_relative_delta() -> None:
    rules = Rules(rmse_improvement=0.02, r2_floor=0.0)
    champion = {"rmse": 0.100, "mae": 0.08, "r2": 0.5}
    assert regression_verdict({"rmse": 0.097, "mae": 0.07, "r2": 0.55}, champion, rules).passed
    small = regression_verdict({"rmse": 0.099, "mae": 0.07, "r2": 0.55}, champion, rules)
    assert failed_rules(small) == ["improvement"]
    bad_fit = regression_verdict({"rmse": 0.05, "mae": 0.04, "r2": -0.1}, champion, rules)
    assert failed_rules(bad_fit) == ["floor"]
