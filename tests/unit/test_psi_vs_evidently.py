"""Our PSI against Evidently's `psi` stattest (evidently.legacy.calculations.stattests).

How Evidently computes it (0.7.x, `stattests/psi.py` and `stattests/utils.get_binned_data`):

    bins     a numerical column with more than 20 distinct reference values is cut into
             equal-width bins over reference + current together, their number chosen by
             Sturges' rule (`np.histogram_bin_edges(combined, bins="sturges")`); the
             `n_bins` argument is ignored (their issue #1400). Any other column is binned
             by distinct value, keeping only values seen in either sample.
    zeros    a share that is exactly 0 becomes 0.0001, or (min non-zero share) / 10⁶ when
             that minimum is at most 0.0001; other shares are left alone, nothing is
             renormalized
    PSI      Σ (ref - cur) · ln(ref / cur), the same sum as ours

Ours floors *every* share at `epsilon` (`np.maximum`), so with `epsilon=1e-4` both give
the same number exactly when no non-zero share is below 1e-4, i.e. when each sample has
at most 10,000 rows or no bin that holds less than 0.01 % of it. Bin boundaries: we
put an edge value in the lower bin ((a, b]), `np.histogram` in the upper one ([a, b)),
so the tests check that no value lies on an interior edge.

Evidently 0.7.23 does not import with pandas 3 (`evidently.legacy.tests.data_integrity_tests`
imports `pandas.core.dtypes.common.infer_dtype_from_object`, which pandas 3 removed), so it
is not a dev dependency of this project, whose lock has pandas 3: these tests run where
evidently imports (a separate environment with pandas < 3) and are skipped elsewhere.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from driftloop_common.ml.drift.psi import bin_counts, fit_edges, psi_from_counts

with warnings.catch_warnings():
    # Evidently's import chain touches numpy.core and other deprecated names.
    warnings.simplefilter("ignore")
    pytest.importorskip(
        "evidently",
        reason="evidently is not installed or does not import here "
        "(0.7.23 needs pandas < 3; see the module docstring)",
        exc_type=ImportError,
    )
    from evidently.legacy.calculations.stattests.psi import psi_stat_test
    from evidently.legacy.calculations.stattests.utils import get_binned_data
    from evidently.legacy.core import ColumnType

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EVIDENTLY_EPSILON = 1e-4  # what `get_binned_data` puts in place of an empty bin's 0


def evidently_psi(reference: np.ndarray, current: np.ndarray, kind: ColumnType) -> float:
    result = psi_stat_test(pd.Series(reference), pd.Series(current), kind, None)
    return float(result.drift_score)


def sturges_edges(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Evidently's numerical bins, as interior edges in our (bins - 1, 1) layout."""
    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    return edges[1:-1, None]


def samples(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a shifted, wider current sample: empty bins on both sides."""
    rng = np.random.default_rng(seed)
    current = rng.normal(1.5, 1.6, size=3000)
    return rng.normal(size=3000), current[current > -0.5][:2000]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_bins_same_psi_numerical(seed: int) -> None:
    reference, current = samples(seed)
    edges = sturges_edges(reference, current)
    assert not np.isin(np.r_[reference, current], edges).any()  # no value on a boundary
    ref_counts = bin_counts(reference[:, None], edges)
    cur_counts = bin_counts(current[:, None], edges)
    # The case the smoothing matters for: empty bins, and no share below 1e-4.
    assert (ref_counts == 0).any() and (cur_counts == 0).any()
    ours = psi_from_counts(ref_counts, cur_counts, epsilon=EVIDENTLY_EPSILON)[0]
    theirs = evidently_psi(reference, current, ColumnType.Numerical)
    assert ours == pytest.approx(theirs, rel=1e-12)
    # and Evidently's shares are our counts / n with the zeros replaced
    ref_pct, cur_pct = get_binned_data(
        pd.Series(reference), pd.Series(current), ColumnType.Numerical, 10
    )
    np.testing.assert_allclose(ref_pct, np.maximum(ref_counts[0] / reference.size, 1e-4))
    np.testing.assert_allclose(cur_pct, np.maximum(cur_counts[0] / current.size, 1e-4))


def test_our_quantile_bins_fed_to_evidently_as_categories_give_our_psi() -> None:
    """Evidently cannot take bin edges, but it bins a categorical column by value: give it
    each row's bin index under our 10 baseline-quantile edges and it computes our PSI."""
    reference, current = samples(3)
    current = current[current > 1.0]  # leaves the lower bins empty in the current sample
    edges = fit_edges(reference[:, None])
    ref_bins = (reference[:, None] > edges[:, 0]).sum(axis=1)
    cur_bins = (current[:, None] > edges[:, 0]).sum(axis=1)
    ref_counts = bin_counts(reference[:, None], edges)
    cur_counts = bin_counts(current[:, None], edges)
    assert (cur_counts == 0).any()
    ours = psi_from_counts(ref_counts, cur_counts, epsilon=EVIDENTLY_EPSILON)[0]
    theirs = evidently_psi(ref_bins, cur_bins, ColumnType.Categorical)
    assert ours == pytest.approx(theirs, rel=1e-12)
    # With our own floor (1e-3) the empty bins weigh less: a different, smaller number.
    assert psi_from_counts(ref_counts, cur_counts)[0] < theirs


def test_evidently_ignores_the_bin_count_so_its_default_is_not_our_10_bin_psi() -> None:
    """Their issue #1400: `n_bins` does not reach the numerical binning."""
    rng = np.random.default_rng(0)
    reference, current = rng.normal(size=3000), rng.normal(0.3, 1.1, size=2000)  # mild shift
    ref_series, cur_series = pd.Series(reference), pd.Series(current)
    sizes = {
        n: len(get_binned_data(ref_series, cur_series, ColumnType.Numerical, n)[0])
        for n in (5, 10, 30)
    }
    if sizes[10] == 10:
        pytest.skip("this Evidently honours n_bins (issue #1400 fixed)")
    sturges = len(sturges_edges(reference, current)) + 1
    assert set(sizes.values()) == {sturges}  # 14 here (5,000 rows), whatever n was asked for

    theirs = evidently_psi(reference, current, ColumnType.Numerical)
    edges = fit_edges(reference[:, None], bins=10)  # ours: 10 reference quantile bins
    ours_10 = psi_from_counts(
        bin_counts(reference[:, None], edges),
        bin_counts(current[:, None], edges),
        epsilon=EVIDENTLY_EPSILON,
    )[0]
    # Same data, same smoothing, different bins: 0.131 (ours) against 0.158 (theirs). The
    # gap depends on the data and its sign is not fixed; bins are the only cause:
    assert ours_10 == pytest.approx(0.1314, abs=1e-4)
    assert theirs == pytest.approx(0.1580, abs=1e-4)
    same = sturges_edges(reference, current)
    ours_on_theirs = psi_from_counts(
        bin_counts(reference[:, None], same),
        bin_counts(current[:, None], same),
        epsilon=EVIDENTLY_EPSILON,
    )[0]
    assert ours_on_theirs == pytest.approx(theirs, rel=1e-12)
