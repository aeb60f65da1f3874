"""Data that cannot make a model ends in `training.failed` with the reason and the counts."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop_common.contracts.errors import CannotTrainError
from driftloop_common.families.base import SplitData

MIN = {"train": 5, "validation": 2, "test": 2}


def data(train: list[str], validation: list[str], test: list[str], categorical=True):
    targets = {
        "train": np.asarray(train, dtype=object),
        "validation": np.asarray(validation, dtype=object),
        "test": np.asarray(test, dtype=object),
    }
    return SplitData(frames={}, targets=targets, categorical=categorical)


def test_enough_rows_of_known_classes_pass() -> None:
    data(["a", "b"] * 3, ["a", "b"], ["b", "a"]).check(MIN)


def test_too_few_rows_names_each_short_split_with_its_counts() -> None:
    with pytest.raises(CannotTrainError) as caught:
        data(["a", "b"], ["a"], ["a", "b"]).check(MIN)
    assert "train has 2 rows (needs ≥ 5)" in caught.value.reason
    assert "validation has 1 rows (needs ≥ 2)" in caught.value.reason
    assert "test" not in caught.value.reason
    assert caught.value.counts == {"train": 2, "validation": 1, "test": 2}


def test_a_class_without_training_examples_is_named_with_where_it_appears() -> None:
    with pytest.raises(CannotTrainError) as caught:
        data(["a", "b"] * 3, ["a", "crypto_wallet"], ["crypto_wallet", "b", "crypto_wallet"]).check(
            MIN
        )
    assert "crypto_wallet" in caught.value.reason and "a," not in caught.value.reason
    assert caught.value.counts["validation:crypto_wallet"] == 1
    assert caught.value.counts["test:crypto_wallet"] == 2


def test_one_class_cannot_make_a_classifier() -> None:
    with pytest.raises(CannotTrainError, match="1 class"):
        data(["a"] * 6, ["a", "a"], ["a", "a"]).check(MIN)


def test_regression_targets_skip_the_class_checks() -> None:
    data([0.1] * 6, [0.2, 0.3], [0.9, 0.4], categorical=False).check(MIN)
