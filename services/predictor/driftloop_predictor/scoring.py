"""Tabular models in the predictor: which model types take records, how a batch of records
is scored, and the one boundary for model calls made outside the batcher.

A tabular version (`TabularScorer`) takes records (one dict of feature → value per row) and
answers a `score` per row. It has no classes, so the `prediction` event of a record carries
`label` `"score"` and, as its `confidence`, the score clipped to [0, 1] (a lead score is a
conversion probability); the unclipped score is in `ScoredRecords.scores`.

`ServedModels.swap` builds each version's batcher with `score_text`; for a model type in
`TABULAR_TYPES` it must use `score_records` instead (the batcher only gathers lists and
splits the answer by request; it never looks at what the items are).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from driftloop_common.contracts.events import ModelType
from driftloop_predictor.batching import ModelFailedError, Scored

__all__ = [
    "SCORE_LABEL",
    "TABULAR_TYPES",
    "ScoredRecords",
    "call_model",
    "feature_datatypes",
    "features_of",
    "is_tabular",
    "score_records",
]

T = TypeVar("T")

TABULAR_TYPES: frozenset[ModelType] = frozenset({ModelType.LEAD_SCORE})
"""The model types whose versions are `TabularScorer`s (the `TabularFamily` of
`driftloop_common.families.FAMILIES`); every other type is a text classifier."""

SCORE_LABEL = "score"
"""The `label` of a tabular prediction (there are no classes)."""


def is_tabular(model_type: ModelType) -> bool:
    return model_type in TABULAR_TYPES


@dataclass(frozen=True)
class ScoredRecords(Scored):
    """`Scored` for records: `scores` as the model gave them, `confidences` clipped."""

    scores: tuple[float, ...] = ()

    def rows(self, start: int, end: int) -> ScoredRecords:
        return ScoredRecords(
            self.labels[start:end], self.confidences[start:end], scores=self.scores[start:end]
        )


def score_records(model: Any, records: list[Mapping[str, Any]]) -> ScoredRecords:
    """A `TabularScorer`-shaped model on records: `predict(context, records)` → a frame
    with a `score` column, one row per record (blocking: it runs on the batcher's thread)."""
    frame = model.predict(None, list(records))
    scores = np.asarray(frame["score"], dtype=np.float64).ravel()
    if len(scores) != len(records):
        raise RuntimeError(f"the model answered {len(scores)} scores for {len(records)} records")
    if not np.isfinite(scores).all():
        raise RuntimeError("the model answered a score that is not a finite number")
    return ScoredRecords(
        labels=[SCORE_LABEL] * len(scores),
        confidences=np.clip(scores, 0.0, 1.0).tolist(),
        scores=tuple(scores.tolist()),
    )


def features_of(model: Any) -> list[str] | None:
    """The feature columns a tabular version reads (`TabularScorer.features`), or None when
    the model does not say."""
    features = getattr(model, "features", None)
    if isinstance(features, Sequence) and all(isinstance(f, str) for f in features):
        return list(features)
    return None


def feature_datatypes(model: Any) -> dict[str, str]:
    """Per feature, the Open Inference Protocol datatype its column travels as: `FP64` for
    a numeric feature of the version's spec (`TabularModel.spec.numeric`), else `BYTES`."""
    spec = getattr(getattr(model, "model", None), "spec", None)
    numeric = set(getattr(spec, "numeric", ()))
    return {name: "FP64" if name in numeric else "BYTES" for name in features_of(model) or []}


async def call_model(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` on a thread, for model code run outside the batcher (`explain`).
    Like the batcher, this is the boundary of the model's code: whatever it raises comes
    out as `ModelFailedError`, named by its type only (its message may quote the input)."""
    try:
        return await asyncio.to_thread(function, *args)
    except Exception as exc:  # the model's code is the user's: this is its boundary
        raise ModelFailedError(type(exc).__name__) from exc
