"""Temporal split boundaries and the semantic-version rules of new model versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.ml.modeling.splits import SPLITS, SplitConfig
from driftloop_common.storage.registry import VersionFacts, next_semver

T = datetime(2026, 11, 24, 12, tzinfo=UTC)


def test_default_windows_follow_the_documented_days() -> None:
    w = SplitConfig().windows(T)
    assert (w["train"].start, w["train"].end) == (T - timedelta(days=90), T - timedelta(days=30))
    assert (w["validation"].start, w["validation"].end) == (
        T - timedelta(days=30),
        T - timedelta(days=7),
    )
    assert (w["test"].start, w["test"].end) == (T - timedelta(days=7), T - timedelta(days=1))


@given(
    offsets=st.lists(st.floats(0, 120 * 24, allow_nan=False), min_size=1, max_size=200),
    as_of_shift=st.integers(-1000, 1000),
)
def test_no_row_falls_in_two_splits_and_none_comes_from_the_future(
    offsets: list[float], as_of_shift: int
) -> None:
    as_of = T + timedelta(hours=as_of_shift)
    windows = SplitConfig().windows(as_of)
    for hours in offsets:
        moment = as_of - timedelta(hours=hours)
        owners = [s for s in SPLITS if windows[s].start <= moment < windows[s].end]
        assert len(owners) <= 1
        if owners:
            assert moment < as_of - timedelta(days=1)
    # ordered: train before validation before test
    assert windows["train"].end <= windows["validation"].start
    assert windows["validation"].end <= windows["test"].start


@pytest.mark.parametrize(
    "config",
    [
        {"train_days": (30.0, 40.0)},  # ends before it starts
        {"validation_days": (35.0, 7.0)},  # overlaps train (which ends 30 days before T)
        {"test_days": (1.0, -1.0)},  # reaches past T
    ],
)
def test_bad_split_configs_are_refused_with_a_reason(config: dict) -> None:
    with pytest.raises(ValueError, match="split"):
        SplitConfig(**config)


def test_naive_as_of_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        SplitConfig().windows(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "as_of",
    [
        datetime(1, 1, 1, tzinfo=UTC),  # 90 days before it is no date at all
        datetime(1970, 2, 1, tzinfo=UTC),  # the train window would start before the epoch
    ],
)
def test_an_as_of_no_window_fits_is_a_permanent_error(as_of: datetime) -> None:
    with pytest.raises(PermanentError) as refused:
        SplitConfig().windows(as_of)
    assert refused.value.code == "invalid_as_of"
    assert as_of.isoformat() in str(refused.value)


def facts(*labels: str, family: str = "text-classifier", encoder: str = "minilm@fp32"):
    return VersionFacts(family=family, encoder=encoder, labels=frozenset(labels))


def test_first_version_is_1_0_0() -> None:
    assert next_semver(None, None, facts("a", "b")) == "1.0.0"


def test_same_labels_bump_the_patch() -> None:
    assert next_semver("1.2.3", facts("a", "b"), facts("b", "a")) == "1.2.4"


def test_added_labels_bump_the_minor() -> None:
    assert next_semver("1.2.3", facts("a", "b"), facts("a", "b", "new")) == "1.3.0"


def test_removed_labels_family_or_encoder_change_bump_the_major() -> None:
    assert next_semver("1.2.3", facts("a", "b"), facts("a")) == "2.0.0"
    assert next_semver("1.2.3", facts("a"), facts("a", encoder="minilm@int8")) == "2.0.0"
    assert next_semver("1.2.3", facts("a"), facts("a", family="tabular-regressor")) == "2.0.0"


def test_facts_round_trip_through_tags() -> None:
    original = facts("b", "a")
    assert VersionFacts.from_tags(original.tags()) == original
    assert VersionFacts.from_tags({}) is None
