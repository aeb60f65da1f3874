"""INTERIM (replaced by the tuned head): logistic regression on embeddings, C on validation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score


@dataclass(frozen=True)
class TextExamples:
    texts: list[str]
    embeddings: np.ndarray
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class HeadSelection:
    params: dict[str, Any]
    candidates: list[dict[str, Any]]
    validation_proba: np.ndarray
    labels: list[str]


@dataclass(frozen=True)
class HeadGrid:
    c: tuple[float, ...] = (1.0, 10.0, 30.0)


@dataclass
class TextHead:
    model: Any
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.model.classes_]

    def predict_proba(self, examples: TextExamples) -> np.ndarray:
        return self.model.predict_proba(examples.embeddings)

    def predict(self, examples: TextExamples) -> np.ndarray:
        return self.model.predict(examples.embeddings)


def select_and_fit(
    train: TextExamples,
    validation: TextExamples,
    *,
    grid: HeadGrid | None = None,
    refit_on_validation: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[TextHead, HeadSelection]:
    grid = grid or HeadGrid()
    best = None
    candidates = []
    for c in grid.c:
        model = LogisticRegression(C=c, max_iter=500, random_state=seed).fit(
            train.embeddings, train.labels
        )
        proba = model.predict_proba(validation.embeddings)
        f1 = f1_score(validation.labels, model.classes_[proba.argmax(1)], average="macro")
        candidates.append({"C": c, "validation_macro_f1": float(f1)})
        if best is None or f1 > best[0]:
            best = (f1, c, proba, model)
    _, c, proba, model = best
    selection = HeadSelection({"C": c}, candidates, proba, [str(x) for x in model.classes_])
    if refit_on_validation:
        x = np.vstack([train.embeddings, validation.embeddings])
        y = np.concatenate([train.labels, validation.labels])
        model = LogisticRegression(C=c, max_iter=500, random_state=seed).fit(x, y)
    return TextHead(model, {"C": c}), selection
