"""The promotion gate as a decision table: every rule is checked, every failure named.

Classification (intent, sentiment…), on the same newest test window:
- `floor`: challenger macro-F1 ≥ `f1_floor`;
- `improvement`: challenger macro-F1 ≥ champion macro-F1 + `f1_delta` (no champion: skipped);
- `class_drop`: no class's F1 falls by more than `max_class_drop` against the champion
  (classes both models know and the test window contains), the guard against
  "cancel order" turning into "check balance" while the average improves;
- `agreement` (off by default): challenger and champion agree on ≥ `min_agreement` of
  recent unlabelled traffic.

Tabular scores: `improvement`: challenger RMSE ≤ champion RMSE × (1 − `rmse_improvement`);
`floor`: challenger R² ≥ `r2_floor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from driftloop_common.ml.modeling.metrics import ClassificationScores


class Rules(BaseModel):
    """The thresholds (the evaluator's settings carry them: `DRIFTLOOP_F1_DELTA`, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    f1_delta: float = Field(default=0.03, ge=0)  # challenger macro-F1 ≥ champion + delta
    f1_floor: float = Field(default=0.6, ge=0, le=1)
    max_class_drop: float = Field(default=0.10, ge=0, le=1)
    min_agreement: float | None = Field(default=None, ge=0, le=1)  # shadow gate, off by default
    rmse_improvement: float = Field(default=0.02, ge=0, lt=1)  # tabular: relative
    r2_floor: float = 0.0


class EvaluationOptions(Rules):
    """What a family's `evaluate` reads besides the thresholds."""

    shadow_hours: float = Field(default=24.0, gt=0)  # recent unlabelled traffic scored
    shadow_max_rows: int = Field(default=2000, gt=0)
    # fewer labelled test rows: a failed verdict (the trainer's DRIFTLOOP_MIN_TEST_ROWS is its own)
    min_evaluation_rows: int = Field(default=20, gt=0)


@dataclass
class Verdict:
    reasons: list[str] = field(default_factory=list)  # one line per failed rule
    checks: list[str] = field(default_factory=list)  # one line per rule, passed or not

    @property
    def passed(self) -> bool:
        return not self.reasons

    def check(self, rule: str, ok: bool, text: str) -> None:
        self.checks.append(f"{'pass' if ok else 'FAIL'} {rule}: {text}")
        if not ok:
            self.reasons.append(f"{rule}: {text}")


def classification_verdict(
    challenger: ClassificationScores,
    champion: ClassificationScores | None,
    rules: Rules,
    *,
    agreement: float | None = None,
) -> Verdict:
    verdict = Verdict()
    verdict.check(
        "floor",
        challenger.macro_f1 >= rules.f1_floor,
        f"challenger macro-F1 {challenger.macro_f1:.4f} vs floor {rules.f1_floor:.4f}",
    )
    if champion is not None:
        needed = champion.macro_f1 + rules.f1_delta
        verdict.check(
            "improvement",
            challenger.macro_f1 >= needed,
            f"challenger macro-F1 {challenger.macro_f1:.4f} vs champion "
            f"{champion.macro_f1:.4f} + {rules.f1_delta:.4f} = {needed:.4f}",
        )
        drops = {
            label: champion.per_class_f1[label] - f1
            for label, f1 in challenger.per_class_f1.items()
            if label in champion.per_class_f1
        }
        worst = sorted(
            (item for item in drops.items() if item[1] > rules.max_class_drop),
            key=lambda item: -item[1],
        )
        verdict.check(
            "class_drop",
            not worst,
            (
                "F1 fell by more than "
                f"{rules.max_class_drop:.2f} for "
                + ", ".join(
                    f"{label} ({champion.per_class_f1[label]:.3f} → "
                    f"{challenger.per_class_f1[label]:.3f})"
                    for label, _ in worst
                )
            )
            if worst
            else f"no class's F1 fell by more than {rules.max_class_drop:.2f}",
        )
    if rules.min_agreement is not None and agreement is not None:
        verdict.check(
            "agreement",
            agreement >= rules.min_agreement,
            f"agreement with the champion {agreement:.4f} vs minimum {rules.min_agreement:.4f}",
        )
    return verdict


def regression_verdict(
    challenger: dict[str, float], champion: dict[str, float] | None, rules: Rules
) -> Verdict:
    verdict = Verdict()
    verdict.check(
        "floor",
        challenger["r2"] >= rules.r2_floor,
        f"challenger R² {challenger['r2']:.4f} vs floor {rules.r2_floor:.4f}",
    )
    if champion is not None:
        needed = champion["rmse"] * (1 - rules.rmse_improvement)
        verdict.check(
            "improvement",
            challenger["rmse"] <= needed,
            f"challenger RMSE {challenger['rmse']:.5f} vs champion {champion['rmse']:.5f} "
            f"× (1 − {rules.rmse_improvement:.3f}) = {needed:.5f}",
        )
    return verdict
