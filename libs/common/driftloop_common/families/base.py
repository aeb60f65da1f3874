"""What every model family provides, for the trainer (load, fit, log) and the evaluator
(score a challenger against its champion), and the types they exchange."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from driftloop_common.contracts.errors import CannotTrainError
from driftloop_common.contracts.events import ModelKey
from driftloop_common.families.rules import EvaluationOptions, Verdict
from driftloop_common.ml.encoder import Precision
from driftloop_common.ml.modeling.splits import SPLITS, Window

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

Progress = Callable[[str], None]
FineTune = Literal["true", "false", "auto"]


class FamilyOptions(BaseModel):
    """How families fit (the trainer's settings carry these: `DRIFTLOOP_FINE_TUNE`, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoder_precision: Precision = "fp32"  # of the stored embeddings a text model learns from
    refit_on_validation: bool = True  # the final model also learns from the validation window
    # Full fine-tuning of the encoder: off by default (slow on CPUs); auto = with CUDA.
    fine_tune: FineTune = "false"
    fine_tune_epochs: int = Field(default=3, gt=0)
    # Text: temperature-scale the head when its validation ECE is above this (0: always,
    # 1: never); the label-free accuracy estimate is only as good as the calibration.
    calibrate_above_ece: float = Field(default=0.02, ge=0, le=1)
    # Text: training rows per label kept with the version for `/explain`'s nearest examples.
    explain_examples: int = Field(default=10, ge=0, le=200)


@dataclass
class SplitData:
    """The rows of each split, and their targets (for counting and checking)."""

    frames: dict[str, Any]
    targets: dict[str, np.ndarray]
    categorical: bool

    def counts(self) -> dict[str, int]:
        return {split: len(self.targets[split]) for split in SPLITS}

    def check(self, min_rows: dict[str, int]) -> None:
        """`CannotTrainError` when the splits cannot make (or test) a model."""
        counts = self.counts()
        short = [
            f"{split} has {counts[split]} rows (needs ≥ {min_rows.get(split, 1)})"
            for split in SPLITS
            if counts[split] < min_rows.get(split, 1)
        ]
        if short:
            raise CannotTrainError("too few labelled rows: " + "; ".join(short), counts)
        if not self.categorical:
            return
        seen = set(self.targets["train"].tolist())
        if len(seen) < 2:
            raise CannotTrainError(
                f"train has {len(seen)} class(es); a classifier needs ≥ 2", counts
            )
        unseen: dict[str, int] = {}
        for split in ("validation", "test"):
            for label in self.targets[split].tolist():
                if label not in seen:
                    unseen[f"{split}:{label}"] = unseen.get(f"{split}:{label}", 0) + 1
        if unseen:
            names = sorted({key.split(":", 1)[1] for key in unseen})
            raise CannotTrainError(
                f"classes with no training examples: {', '.join(names)} "
                "(they appear only after the train window; wait for more labelled data "
                "or widen the train window)",
                {**counts, **unseen},
            )


@dataclass
class FittedModel:
    """A fitted model and what the trainer logs with it; families subclass it with the
    results their artifacts and report need."""

    pyfunc: Any
    labels: frozenset[str]
    params: dict[str, Any]
    metrics: dict[str, float]
    counts: dict[str, int]
    signature: ModelSignature | None
    input_example: Any = None  # raw input MLflow runs through the model before logging it
    model_artifacts: dict[str, str] | None = None  # files the pyfunc loads (fine-tuned weights)


@dataclass
class Outcome:
    """A challenger judged against its champion: the verdict, every number, report parts."""

    verdict: Verdict
    metrics: dict[str, float]
    report: list[str]
    figures: dict[str, tuple[dict[str, float], dict[str, float] | None]] = field(
        default_factory=dict
    )  # file name → (challenger, champion) per-class F1


F = TypeVar("F", bound=FittedModel)


class Family(Protocol[F]):
    """One model family: where its rows come from, how it is fitted, logged and judged."""

    name: str  # recorded with each version (`driftloop.family`): a change is a major semver
    encoder_id: str

    def load(self, key: ModelKey, windows: dict[str, Window]) -> SplitData: ...

    def fit(self, data: SplitData, *, seed: int, progress: Progress) -> F: ...

    def write_artifacts(self, fitted: F, folder: Path) -> None: ...

    def report(self, fitted: F) -> str:
        """Markdown about the fit (the trainer puts the run's facts above it)."""
        ...

    def pip_requirements(self) -> list[str]: ...

    def evaluate(
        self,
        language: str,
        window: Window,
        as_of: datetime,
        challenger: Any,
        champion: Any | None,
        options: EvaluationOptions,
    ) -> Outcome:
        """Score the challenger (and the champion, when it is of this family) on the same
        labelled rows of `window`, and judge them by `options`' rules."""
        ...


class FamilyBase:
    """What the built-in families share: their store and options, and the helpers of
    their reports and verdicts."""

    def __init__(self, store_url: str, options: FamilyOptions) -> None:
        self.store_url = store_url
        self.options = options

    @staticmethod
    def too_few_rows(window: Window, rows: int, options: EvaluationOptions) -> Outcome | None:
        """Too few labelled rows to judge: a failed verdict that says so (not a retry: the
        window's rows will not appear later)."""
        if rows >= options.min_evaluation_rows:
            return None
        verdict = Verdict()
        verdict.check(
            "test_rows",
            False,
            f"the test window {window} holds {rows} labelled rows "
            f"(needs ≥ {options.min_evaluation_rows})",
        )
        return Outcome(verdict, {"test_rows": float(rows)}, [])

    @staticmethod
    def requirements(*names: str) -> list[str]:
        """`name==version` pins of the installed packages (a version records what it ran
        on)."""
        from importlib.metadata import PackageNotFoundError, version

        pins = []
        for name in names:
            try:
                pins.append(f"{name}=={version(name)}")
            except PackageNotFoundError:
                pins.append(name)
        return pins
