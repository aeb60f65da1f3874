"""A sliding time window of one model key's traffic, kept as counts, not rows.

Rows are projected and binned as they arrive and added to hourly buckets (by the
interaction's own `completed_at`, so a replay after a restart lands in the same buckets
and yields the same decision). Each bucket holds bin counts (components × bins), label
counts and a bounded reservoir sample of projected rows for the domain classifier, so
memory is O(buckets × (components × bins + sample × components)), never O(rows).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from driftloop_common.ml.drift.baseline import DriftBaseline
from driftloop_common.ml.drift.psi import bin_counts


@dataclass
class _Bucket:
    counts: NDArray[np.int64]
    rows: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    sample: NDArray[np.float32] | None = None  # grows up to sample_size rows, then fixed
    seen: int = 0  # rows offered to the reservoir


@dataclass(frozen=True)
class WindowSnapshot:
    start: datetime
    end: datetime
    rows: int
    counts: NDArray[np.int64]  # (components, bins)
    labels: Counter[str]
    sample: NDArray[np.float32]  # (<= sample_size, components), uniform over the window

    @property
    def labelled(self) -> int:
        return sum(self.labels.values())


class SlidingWindow:
    def __init__(
        self,
        baseline: DriftBaseline,
        *,
        length: timedelta = timedelta(hours=24),
        bucket: timedelta = timedelta(hours=1),
        sample_size: int = 2000,
        seed: int = 0,
    ) -> None:
        if length < bucket or length % bucket:
            raise ValueError("the window length must be a whole number of buckets")
        self.baseline = baseline
        self.length = length
        self.bucket = bucket
        self.sample_size = sample_size
        self.seed = seed
        self._buckets: dict[int, _Bucket] = {}
        self.latest: datetime | None = None

    def _bucket_index(self, when: datetime) -> int:
        return math.floor(when.timestamp() / self.bucket.total_seconds())

    def add(
        self,
        embeddings: NDArray[np.floating],
        completed_at: Sequence[datetime],
        labels: Sequence[str | None] | None = None,
    ) -> None:
        """Add rows (raw embeddings, in the baseline's encoder space) at their event times."""
        projected = self.baseline.projection.transform(embeddings)
        oldest, newest = min(completed_at), max(completed_at)
        if self._bucket_index(oldest) == self._bucket_index(newest):
            # The usual case, a batch within one hour: no per-row times, no row copies.
            self._add_to(self._bucket_index(newest), projected, labels)
        else:
            # As `_bucket_index`, for all rows at once (the same division and floor).
            stamps = np.array([t.timestamp() for t in completed_at], dtype=np.float64)
            keys = np.floor(stamps / self.bucket.total_seconds()).astype(np.int64)
            for key in np.unique(keys):
                rows = np.flatnonzero(keys == key)
                picked = None if labels is None else [labels[i] for i in rows]
                self._add_to(int(key), projected[rows], picked)
        self.latest = newest if self.latest is None else max(self.latest, newest)

    def _add_to(
        self, key: int, projected: NDArray[np.float32], labels: Sequence[str | None] | None
    ) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(counts=np.zeros_like(self.baseline.reference_counts))
            self._buckets[key] = bucket
        bucket.counts += bin_counts(projected, self.baseline.edges)
        bucket.rows += projected.shape[0]
        if labels is not None:
            bucket.labels.update(label for label in labels if label is not None)
        self._offer(bucket, key, projected)

    def _offer(self, bucket: _Bucket, key: int, rows: NDArray[np.float32]) -> None:
        """Reservoir sampling (Algorithm R), vectorized and seeded per bucket so a replay
        of the same events gives the same sample."""
        rng = np.random.default_rng([self.seed, _seedable(key), bucket.seen])
        held = 0 if bucket.sample is None else bucket.sample.shape[0]
        room = min(self.sample_size - held, rows.shape[0])
        if room > 0:
            fresh = rows[:room]
            bucket.sample = (
                fresh.copy() if bucket.sample is None else np.concatenate([bucket.sample, fresh])
            )
        rest = rows[max(room, 0) :]
        if rest.shape[0]:
            assert bucket.sample is not None
            seen = bucket.seen + max(room, 0) + np.arange(1, rest.shape[0] + 1)
            slots = rng.integers(0, seen)  # row i replaces a slot with chance size / seen_i
            keep = slots < self.sample_size
            bucket.sample[slots[keep]] = rest[keep]  # later rows win, as in the loop
        bucket.seen += rows.shape[0]

    def _live(self, end: datetime | None) -> tuple[datetime, datetime, dict[int, _Bucket]]:
        """The buckets of the window ending at `end` (default: the newest event seen);
        buckets that fell out of it are dropped for good."""
        end = end or self.latest or datetime.now(UTC)
        start = end - self.length
        first, last = self._bucket_index(start), self._bucket_index(end)
        for key in [k for k in self._buckets if k < first]:
            del self._buckets[key]
        return start, end, {k: b for k, b in self._buckets.items() if first <= k <= last}

    def label_counts(self, end: datetime | None = None) -> Counter[str]:
        labels: Counter[str] = Counter()
        for bucket in self._live(end)[2].values():
            labels.update(bucket.labels)
        return labels

    def snapshot(self, end: datetime | None = None) -> WindowSnapshot:
        """Counts, labels and a row sample of the window ending at `end`."""
        start, end, live = self._live(end)
        counts = np.zeros_like(self.baseline.reference_counts)
        labels: Counter[str] = Counter()
        rows = 0
        for bucket in live.values():
            counts += bucket.counts
            labels.update(bucket.labels)
            rows += bucket.rows
        return WindowSnapshot(start, end, rows, counts, labels, self._sample(live, rows, end))

    def _sample(self, live: dict[int, _Bucket], rows: int, end: datetime) -> NDArray[np.float32]:
        """Draw from each bucket's reservoir in proportion to its share of the window."""
        if rows == 0:
            return np.zeros((0, self.baseline.projection.k), np.float32)
        rng = np.random.default_rng([self.seed, _seedable(self._bucket_index(end))])
        keys = [k for k in sorted(live) if live[k].sample is not None]
        available = np.array([live[k].sample.shape[0] for k in keys])
        wanted = min(self.sample_size, int(available.sum()))
        # Largest-remainder allocation: bucket shares proportional to their rows, summing
        # exactly to `wanted` and never more than a reservoir holds.
        exact = wanted * np.array([live[k].rows for k in keys]) / rows
        take = np.minimum(np.floor(exact).astype(int), available)
        for i in np.argsort(take - exact):  # most under-served buckets first
            if take.sum() >= wanted:
                break
            if take[i] < available[i]:
                take[i] += 1
        parts = [
            live[k].sample[np.sort(rng.choice(available[i], size=take[i], replace=False))]
            for i, k in enumerate(keys)
            if take[i]
        ]
        if not parts:
            return np.zeros((0, self.baseline.projection.k), np.float32)
        return np.concatenate(parts)

    def memory_bytes(self) -> int:
        return sum(
            b.counts.nbytes + (0 if b.sample is None else b.sample.nbytes)
            for b in self._buckets.values()
        )


def _seedable(key: int) -> int:
    """numpy seeds are non-negative; an hour before 1970 has a negative bucket key."""
    return key & 0xFFFF_FFFF_FFFF_FFFF
