"""Temporal splits: train on the past, choose on the recent past, test on the newest days.

For a request at time T (default): train `[T-90d, T-30d)`, validation `[T-30d, T-7d)`,
test `[T-7d, T-1d)`. Windows are half-open and ordered, so no row can fall in two splits
and nothing after `T-1d` is used (the last day may still be missing labels).

T comes from an event (`as_of`, or the request's `occurred_at`), so it is input: a T whose
windows cannot be computed (year 1) or reach back before the Unix epoch (the store, MLflow
and Parquet count time from it) is refused with `InvalidAsOf`, a `PermanentError`: such a
request goes to the DLQ instead of failing the same way on every redelivery.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator

from driftloop_common.contracts.errors import PermanentError

SPLITS = ("train", "validation", "test")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidAsOf(PermanentError):
    """A request time no split window can be computed for."""

    code = "invalid_as_of"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


class SplitConfig(BaseModel):
    """Each split as (days before T it starts, days before T it ends); the trainer's
    settings carry them (`DRIFTLOOP_TRAIN_DAYS=[90,30]`, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_days: tuple[float, float] = (90.0, 30.0)
    validation_days: tuple[float, float] = (30.0, 7.0)
    test_days: tuple[float, float] = (7.0, 1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        spans = [self.train_days, self.validation_days, self.test_days]
        for name, (begin, end) in zip(SPLITS, spans, strict=True):
            if not begin > end >= 0:
                raise ValueError(
                    f"{name} split must start before it ends and not after T: "
                    f"got {begin} → {end} days before T"
                )
        named = list(zip(SPLITS, spans, strict=True))
        for (name, (_, end)), (later, (begin, _)) in itertools.pairwise(named):
            if begin > end:
                raise ValueError(
                    f"{later} split starts {begin} days before T, before {name} ends "
                    f"({end} days before T): the splits would overlap"
                )
        return self

    def windows(self, as_of: datetime) -> dict[str, Window]:
        """The three windows for a request at `as_of` (timezone-aware)."""
        if as_of.tzinfo is None:
            raise ValueError(f"as_of must be timezone-aware, got {as_of.isoformat()}")
        spans = (self.train_days, self.validation_days, self.test_days)
        try:
            windows = {
                name: Window(as_of - timedelta(days=begin), as_of - timedelta(days=end))
                for name, (begin, end) in zip(SPLITS, spans, strict=True)
            }
        except OverflowError as exc:
            raise InvalidAsOf(
                f"as_of {as_of.isoformat()}: the split windows reach {self.train_days[0]} days "
                "before it, outside the range of dates"
            ) from exc
        if windows["train"].start < EPOCH:
            raise InvalidAsOf(
                f"as_of {as_of.isoformat()}: the train window would start "
                f"{windows['train'].start.isoformat()}, before {EPOCH.date()}"
            )
        return windows
