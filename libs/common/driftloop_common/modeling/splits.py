"""Temporal splits: train on the past, choose on the recent past, test on the newest days.

For a request at time T (default): train `[T-90d, T-30d)`, validation `[T-30d, T-7d)`,
test `[T-7d, T-1d)`. Windows are half-open and ordered, so no row can fall in two splits
and nothing after `T-1d` is used (the last day may still be missing labels).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


@dataclass(frozen=True)
class SplitConfig:
    """Each split as (days before T it starts, days before T it ends)."""

    train_days: tuple[float, float] = (90.0, 30.0)
    validation_days: tuple[float, float] = (30.0, 7.0)
    test_days: tuple[float, float] = (7.0, 1.0)

    def __post_init__(self) -> None:
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

    def windows(self, as_of: datetime) -> dict[str, Window]:
        """The three windows for a request at `as_of` (timezone-aware)."""
        if as_of.tzinfo is None:
            raise ValueError(f"as_of must be timezone-aware, got {as_of.isoformat()}")
        spans = (self.train_days, self.validation_days, self.test_days)
        return {
            name: Window(as_of - timedelta(days=begin), as_of - timedelta(days=end))
            for name, (begin, end) in zip(SPLITS, spans, strict=True)
        }
