"""PSI on tiny data with exact values, and its properties (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from driftloop_common.ml.drift import psi as psi_module
from driftloop_common.ml.drift.psi import (
    PsiSummary,
    _bin_counts_by_index,
    bin_counts,
    fit_edges,
    level,
    psi,
    psi_from_counts,
)


def design_document_psi(expected, actual, bucket_count=10):
    """The design document's `calculate_psi`, verbatim in substance, for comparison only."""
    if len(expected) != len(actual):
        raise ValueError("Lengths of expected and actual must be equal")
    min_val = min(np.min(expected), np.min(actual))
    max_val = max(np.max(expected), np.max(actual))
    bucket_range = (max_val - min_val) / bucket_count
    breaks = [min_val + (i * bucket_range) for i in range(bucket_count + 1)]
    breaks[-1] += 1

    def make_percentiles(arr, breaks):
        return [len(arr[arr >= b]) / len(arr) for b in breaks]

    e = [max(p, 0.001) for p in make_percentiles(expected, breaks)]
    a = [max(p, 0.001) for p in make_percentiles(actual, breaks)]
    return sum((x - y) * np.log(x / y) for x, y in zip(a, e, strict=True))


BASE = np.arange(1000, dtype=np.float64) + 0.5  # ten quantile bins of exactly 100 rows


def test_one_bins_mass_moved_to_its_neighbour_exact_values() -> None:
    window = BASE.copy()
    window[:100] += 100  # the first bin's rows now fall in the second bin
    ours = psi(BASE[:, None], window[:, None])[0]
    # Textbook: bin 1 goes 0.1 → 0 (floored at 0.001), bin 2 goes 0.1 → 0.2.
    textbook = (0.001 - 0.1) * math.log(0.001 / 0.1) + (0.2 - 0.1) * math.log(0.2 / 0.1)
    assert ours == pytest.approx(textbook, abs=1e-12)
    assert ours == pytest.approx(0.5252, abs=1e-4)
    # The design document's cumulative comparison sees only 0.1 · ln(10/9) ≈ 0.0105.
    theirs = design_document_psi(BASE, window)
    assert theirs == pytest.approx(0.1 * math.log(1.0 / 0.9), abs=1e-12)
    assert ours > 40 * theirs


def test_design_document_psi_requires_equal_sizes_ours_does_not() -> None:
    with pytest.raises(ValueError):
        design_document_psi(BASE, BASE[:500])
    assert psi(BASE[:, None], BASE[::2, None])[0] == pytest.approx(0.0, abs=1e-12)


def test_edges_are_baseline_quantiles_and_outer_bins_are_open() -> None:
    edges = fit_edges(BASE[:, None])
    assert edges.shape == (9, 1)
    np.testing.assert_allclose(edges[:, 0], np.quantile(BASE, np.arange(1, 10) / 10))
    counts = bin_counts(np.array([[-1e9], [1e9], [edges[0, 0]], [edges[0, 0] + 1e-9]]), edges)
    # far below → first bin, far above → last bin; an edge value belongs to the lower bin
    assert counts[0].tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]


def test_duplicate_edges_from_a_point_mass_add_nothing() -> None:
    spiky = np.r_[np.zeros(600), np.linspace(1, 2, 400)][:, None]
    edges = fit_edges(spiky)
    assert len(np.unique(edges)) < edges.shape[0]  # several edges collapsed onto 0
    assert psi(spiky, spiky[::-1])[0] == pytest.approx(0.0, abs=1e-12)
    shifted = spiky.copy()
    shifted[:100] = 1.5  # some of the point mass moves into the continuous part
    assert psi(spiky, shifted)[0] > 0.05


def test_bin_counts_match_a_per_component_searchsorted() -> None:
    rng = np.random.default_rng(1)
    baseline, window = rng.normal(size=(500, 7)), rng.normal(0.3, 1.2, size=(321, 7))
    edges = fit_edges(baseline)
    counts = bin_counts(window, edges)
    for j in range(7):
        expected = np.bincount(
            np.searchsorted(edges[:, j], window[:, j], side="left"), minlength=10
        )
        assert counts[j].tolist() == expected.tolist()


def odd_values(rng: np.random.Generator, shape: tuple[int, int], edges: np.ndarray) -> np.ndarray:
    """Normal values mixed with the edges themselves, their float32 neighbours, NaN and ±inf."""
    x = rng.normal(size=shape)
    with np.errstate(over="ignore"):  # 1e300 becomes +inf in float32
        as_float32 = edges.astype(np.float32)
    specials = np.r_[
        edges.ravel(),
        as_float32.astype(np.float64).ravel(),
        np.nextafter(as_float32, np.float32(np.inf)).astype(np.float64).ravel(),
        [np.nan, np.inf, -np.inf, 0.0, -0.0],
    ]
    spots = rng.random(shape) < 0.3
    x[spots] = rng.choice(specials, size=int(spots.sum()))
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("rows", "components"), [(0, 3), (1, 1), (7, 5), (1000, 3), (333, 200)])
@pytest.mark.parametrize(("lanes", "u8_rows"), [(8192, 255), (16, 3), (1, 2)])
def test_the_fast_path_equals_the_plain_definition(
    monkeypatch: pytest.MonkeyPatch, dtype, rows: int, components: int, lanes: int, u8_rows: int
) -> None:
    # Small lanes / uint8 blocks put row groups, block boundaries and leftovers in small data.
    monkeypatch.setattr(psi_module, "_LANES", lanes)
    monkeypatch.setattr(psi_module, "_U8_ROWS", u8_rows)
    rng = np.random.default_rng(rows * 31 + components)
    edges = fit_edges(rng.normal(size=(200, components)))
    edges[2:4] = edges[3]  # tied edges, as a point mass gives
    edges[-1, 0] = 1e300  # beyond float32's range (a float32 value can only be +inf above it)
    with np.errstate(over="ignore"):
        x = odd_values(rng, (rows, components), edges).astype(dtype)
    fast = bin_counts(x, edges)
    assert fast.dtype == np.int64 and fast.shape == (components, 10)
    assert fast.sum() == rows * components
    assert fast.tolist() == _bin_counts_by_index(x, edges).tolist()


def test_float32_rows_are_counted_as_exactly_as_float64_ones() -> None:
    # Edges halfway between float32 numbers: rounding them to nearest would move the ties.
    below = np.float32(0.1)
    above = np.nextafter(below, np.float32(1))
    middle = (np.float64(below) + np.float64(above)) / 2
    edges = np.array([[middle], [np.float64(above)]])
    x = np.array([[below], [above], [np.nextafter(above, np.float32(1))]], dtype=np.float32)
    assert bin_counts(x, edges).tolist() == [[1, 1, 1]]
    assert bin_counts(x.astype(np.float64), edges).tolist() == [[1, 1, 1]]


def test_unsorted_edges_fall_back_to_the_plain_definition() -> None:
    edges = np.array([[1.0, 0.0], [0.0, np.nan]])
    x = np.array([[0.5, 0.5], [2.0, -1.0]], dtype=np.float32)
    assert bin_counts(x, edges).tolist() == _bin_counts_by_index(x, edges).tolist()


def test_all_components_at_once_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(2)
    baseline, window = rng.normal(size=(800, 5)), rng.standard_t(3, size=(600, 5))
    together = psi(baseline, window)
    apart = [psi(baseline[:, [j]], window[:, [j]])[0] for j in range(5)]
    np.testing.assert_allclose(together, apart, rtol=1e-12)


def test_summary_and_levels() -> None:
    summary = PsiSummary.of(np.array([0.01, 0.05, 0.3, 0.12]), threshold=0.1)
    assert (summary.mean, summary.max, summary.share_above) == (0.12, 0.3, 0.5)
    assert [level(v) for v in (0.0, 0.099, 0.1, 0.25, 0.2501)] == [
        "stable",
        "stable",
        "warning",
        "warning",
        "major",
    ]


# ------------------------------------------------------------------ properties
samples = arrays(
    np.float64,
    st.tuples(st.integers(20, 120), st.integers(1, 4)),
    elements=st.floats(-1e3, 1e3, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_psi_is_never_negative(baseline, window) -> None:
    if baseline.shape[1] != window.shape[1]:
        window = np.resize(window, (window.shape[0], baseline.shape[1]))
    assert np.all(psi(baseline, window) >= -1e-12)


@settings(max_examples=60, deadline=None)
@given(samples)
def test_identical_samples_score_zero(baseline) -> None:
    np.testing.assert_allclose(psi(baseline, baseline.copy()), 0.0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(samples, st.randoms(use_true_random=False))
def test_row_order_does_not_matter(baseline, rnd) -> None:
    rng = np.random.default_rng(rnd.randint(0, 2**32 - 1))
    window = baseline[::-1] + 0.5
    shuffled = window[rng.permutation(window.shape[0])]
    np.testing.assert_allclose(psi(baseline, window), psi(baseline, shuffled), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(samples, samples, st.integers(2, 5))
def test_window_size_does_not_matter_for_equal_distributions(baseline, window, k) -> None:
    window = np.resize(window, (window.shape[0], baseline.shape[1]))
    edges = fit_edges(baseline)
    ref = bin_counts(baseline, edges)
    once = psi_from_counts(ref, bin_counts(window, edges))
    repeated = psi_from_counts(ref, bin_counts(np.tile(window, (k, 1)), edges))
    np.testing.assert_allclose(once, repeated, rtol=1e-9, atol=1e-12)
