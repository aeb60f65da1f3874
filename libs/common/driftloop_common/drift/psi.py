"""Population Stability Index per component, vectorized over all components at once.

    bins    baseline quantile edges per component (10 bins by default); the outer bins
            are open-ended, so a window value beyond the baseline's range still counts;
            duplicate edges (a component with a heavy point mass) leave empty bins
            that are empty in both samples and so add nothing
    shares  count / n, floored at `epsilon` (1e-3) so an empty bin scores finitely
    PSI     Σ (q - p) · ln(q / p) per component, p = baseline share, q = window share

This is the textbook PSI. The design document's `calculate_psi` compared cumulative
shares, needed equal sample sizes and flattened every embedding dimension into one
histogram; `tests/unit/test_psi.py` shows how far apart the two are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DEFAULT_BINS = 10
DEFAULT_EPSILON = 1e-3
_ROW_CHUNK = 4096  # rows compared at a time: bounds the (rows × edges × components) temporary


def fit_edges(baseline: NDArray[np.floating], bins: int = DEFAULT_BINS) -> NDArray[np.float64]:
    """Interior quantile edges of each column: shape (bins - 1, components)."""
    x = np.asarray(baseline, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < bins:
        raise ValueError(f"need a 2-D baseline with at least {bins} rows, got shape {x.shape}")
    quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.quantile(x, quantiles, axis=0, method="linear")


def bin_counts(x: NDArray[np.floating], edges: NDArray[np.floating]) -> NDArray[np.int64]:
    """Counts per (component, bin): shape (components, bins). Bin k is (edge[k-1], edge[k]]."""
    x = np.asarray(x, dtype=np.float64)
    n_edges, components = edges.shape
    bins = n_edges + 1
    if x.ndim != 2 or x.shape[1] != components:
        raise ValueError(f"rows must have {components} components, got shape {x.shape}")
    if not np.all(edges[1:] >= edges[:-1]):  # unsorted or NaN edges: no shortcut
        return _bin_counts_by_index(x, edges)
    # Edges sorted in each column: bin k holds the rows above edge k-1 less those above
    # edge k, so a count is `bins - 1` comparisons and column sums, with no per-row index.
    above = np.zeros((bins + 1, components), dtype=np.int64)  # above[k]: rows > edge[k-1]
    above[0] = x.shape[0]
    for start in range(0, x.shape[0], _ROW_CHUNK):
        chunk = x[start : start + _ROW_CHUNK]
        for k in range(n_edges):
            above[k + 1] += (chunk > edges[k]).sum(axis=0, dtype=np.int32)
    return (above[:-1] - above[1:]).T.copy()


def _bin_counts_by_index(x: NDArray[np.float64], edges: NDArray[np.floating]) -> NDArray[np.int64]:
    """`bin_counts` for any edges: a row's bin is the number of edges below it."""
    n_edges, components = edges.shape
    bins = n_edges + 1
    counts = np.zeros(components * bins, dtype=np.int64)
    offsets = np.arange(components) * bins
    for start in range(0, x.shape[0], _ROW_CHUNK):
        chunk = x[start : start + _ROW_CHUNK]
        index = (chunk[:, None, :] > edges[None, :, :]).sum(axis=1)  # (rows, components)
        counts += np.bincount((index + offsets).ravel(), minlength=components * bins)
    return counts.reshape(components, bins)


def shares(counts: NDArray[np.integer], epsilon: float = DEFAULT_EPSILON) -> NDArray[np.float64]:
    """Row-wise shares, floored at `epsilon` so an empty bin has a finite log-ratio."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    if np.any(totals == 0):
        raise ValueError("cannot compute shares of an empty sample")
    return np.maximum(counts / totals, epsilon)


def psi_from_counts(
    reference: NDArray[np.integer],
    window: NDArray[np.integer],
    epsilon: float = DEFAULT_EPSILON,
) -> NDArray[np.float64]:
    """PSI of each row (component) of two count tables of the same shape."""
    p = shares(reference, epsilon)
    q = shares(window, epsilon)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def psi(
    baseline: NDArray[np.floating],
    window: NDArray[np.floating],
    bins: int = DEFAULT_BINS,
    epsilon: float = DEFAULT_EPSILON,
) -> NDArray[np.float64]:
    """PSI per column of `window` against `baseline` (edges fitted on the baseline)."""
    edges = fit_edges(baseline, bins)
    return psi_from_counts(bin_counts(baseline, edges), bin_counts(window, edges), epsilon)


def level(value: float) -> str:
    """The customary reading of a PSI value: stable < 0.1 ≤ warning ≤ 0.25 < major.

    These levels were made for one scalar feature; they are reported because users know
    them, never used to decide (see `driftloop_common.drift.detect`)."""
    if value < 0.1:
        return "stable"
    return "warning" if value <= 0.25 else "major"


@dataclass(frozen=True)
class PsiSummary:
    mean: float
    max: float
    share_above: float  # share of components whose PSI exceeds `threshold`
    threshold: float
    components: int

    @classmethod
    def of(cls, values: NDArray[np.floating], threshold: float = 0.1) -> PsiSummary:
        values = np.asarray(values, dtype=np.float64)
        return cls(
            mean=float(values.mean()),
            max=float(values.max()),
            share_above=float((values > threshold).mean()),
            threshold=threshold,
            components=int(values.size),
        )
