"""The incremental window equals a batch recompute; old buckets expire; memory is bounded."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pytest

from driftloop_common.ml.drift.baseline import DriftBaseline, build_baseline
from driftloop_common.ml.drift.psi import bin_counts
from driftloop_common.ml.drift.window import SlidingWindow
from tests.unit.drift_data import ENCODER, T0, Traffic, times

HOUR_SPAN = timedelta(minutes=59)


@pytest.fixture(scope="module")
def baseline() -> DriftBaseline:
    x, labels = Traffic().sample(3000, np.random.default_rng(0))
    return build_baseline(x, encoder=ENCODER, labels=labels, source="test")


def test_incremental_counts_equal_a_batch_recompute(baseline: DriftBaseline) -> None:
    rng = np.random.default_rng(1)
    x, labels = Traffic().sample(2500, rng)
    when = times(2500)
    window = SlidingWindow(baseline)
    for start in range(0, 2500, 500):  # updates of 500 rows
        window.add(x[start : start + 500], when[start : start + 500], labels[start : start + 500])
    snap = window.snapshot()
    batch = bin_counts(baseline.projection.transform(x), baseline.edges)
    np.testing.assert_array_equal(snap.counts, batch)
    assert snap.rows == 2500
    assert snap.labels == Counter(labels)
    assert snap.sample.shape == (2000, baseline.projection.k)


def test_updates_within_one_hour_equal_one_update_across_hours(baseline: DriftBaseline) -> None:
    # `add` takes a shortcut when a batch falls in one hourly bucket; both paths must agree.
    rng = np.random.default_rng(5)
    x, labels = Traffic().sample(1000, rng)
    labelled: list[str | None] = [None if i % 3 else label for i, label in enumerate(labels)]
    when = [t for hour in range(4) for t in times(250, T0 + timedelta(hours=hour), HOUR_SPAN)]
    hourly, across = (
        SlidingWindow(baseline, sample_size=200),
        SlidingWindow(baseline, sample_size=200),
    )
    for start in range(0, 1000, 250):
        hourly.add(x[start : start + 250], when[start : start + 250], labelled[start : start + 250])
    across.add(x, when, labelled)
    a, b = hourly.snapshot(), across.snapshot()
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.labels == b.labels == Counter(label for label in labelled if label is not None)
    assert a.rows == b.rows == 1000
    np.testing.assert_allclose(a.sample, b.sample, atol=1e-6)


def test_rows_older_than_the_window_expire(baseline: DriftBaseline) -> None:
    rng = np.random.default_rng(2)
    window = SlidingWindow(baseline, length=timedelta(hours=24))
    old, _ = Traffic().sample(300, rng)
    new, _ = Traffic().sample(200, rng)
    window.add(old, times(300, T0, timedelta(hours=2)))
    window.add(new, times(200, T0 + timedelta(hours=30), timedelta(hours=2)))
    snap = window.snapshot()
    assert snap.rows == 200
    batch = bin_counts(baseline.projection.transform(new), baseline.edges)
    np.testing.assert_array_equal(snap.counts, batch)
    assert snap.end - snap.start == timedelta(hours=24)


def test_memory_does_not_grow_with_rows(baseline: DriftBaseline) -> None:
    rng = np.random.default_rng(3)
    window = SlidingWindow(baseline, sample_size=200)
    x, _ = Traffic().sample(10_000, rng)
    window.add(x, times(10_000))
    full = window.memory_bytes()
    bound = 24 * (baseline.reference_counts.nbytes + 200 * baseline.projection.k * 4)
    assert full <= bound
    for _ in range(4):
        window.add(x, times(10_000))
    assert window.snapshot().rows == 50_000
    assert window.memory_bytes() == full


def test_replaying_the_same_events_gives_the_same_snapshot(baseline: DriftBaseline) -> None:
    rng = np.random.default_rng(4)
    x, labels = Traffic().sample(3000, rng)
    when = times(3000)
    first, second = (
        SlidingWindow(baseline, sample_size=300),
        SlidingWindow(baseline, sample_size=300),
    )
    first.add(x, when, labels)
    for start in range(0, 3000, 700):  # a restart replays in different batch sizes
        second.add(x[start : start + 700], when[start : start + 700], labels[start : start + 700])
    a, b = first.snapshot(), second.snapshot()
    np.testing.assert_array_equal(a.counts, b.counts)
    # the same rows are sampled (projection arithmetic may differ in the last bit by batch)
    np.testing.assert_allclose(a.sample, b.sample, atol=1e-6)


def test_baseline_round_trips_through_its_artifact_folder(
    baseline: DriftBaseline, tmp_path
) -> None:
    loaded = DriftBaseline.load(baseline.save(tmp_path / "baseline"))
    assert loaded.fingerprint == baseline.fingerprint
    assert loaded.encoder == baseline.encoder
    assert loaded.label_set == baseline.label_set
    np.testing.assert_array_equal(loaded.projection.components, baseline.projection.components)


def test_baseline_projection_explains_the_requested_variance(baseline: DriftBaseline) -> None:
    assert baseline.projection.explained_variance_ratio >= 0.95
    assert 1 <= baseline.projection.k <= 48
    raw = build_baseline(
        Traffic().sample(600, np.random.default_rng(5))[0], encoder=ENCODER, raw_dimensions=True
    )
    assert raw.projection.k == 48


def test_rows_before_1970_are_counted_and_sampled_like_any_others(
    baseline: DriftBaseline,
) -> None:
    """An hour before 1970 has a negative bucket key; numpy refuses negative seeds."""
    from datetime import UTC, datetime

    x, labels = Traffic().sample(400, np.random.default_rng(7))
    when = times(400, datetime(1969, 12, 31, 23, 0, tzinfo=UTC), timedelta(minutes=59))
    window = SlidingWindow(baseline, sample_size=100)
    window.add(x, when, labels)
    snap = window.snapshot()
    assert snap.rows == 400
    assert snap.sample.shape == (100, baseline.projection.k)
    again = SlidingWindow(baseline, sample_size=100)
    again.add(x, when, labels)
    np.testing.assert_array_equal(again.snapshot().sample, snap.sample)  # replayable
