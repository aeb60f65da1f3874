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
_ROW_CHUNK = 4096  # index path: rows at a time, bounds its rows × edges × components temporary
_LANES = 8192  # values compared per inner loop: rows are laid side by side to reach it
_U8_ROWS = 255  # 0/1 rows summed in uint8 at a time, the most that cannot overflow


def fit_edges(baseline: NDArray[np.floating], bins: int = DEFAULT_BINS) -> NDArray[np.float64]:
    """Interior quantile edges of each column: shape (bins - 1, components)."""
    x = np.asarray(baseline, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < bins:
        raise ValueError(f"need a 2-D baseline with at least {bins} rows, got shape {x.shape}")
    quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.quantile(x, quantiles, axis=0, method="linear")


def bin_counts(x: NDArray[np.floating], edges: NDArray[np.floating]) -> NDArray[np.int64]:
    """Counts per (component, bin): shape (components, bins). Bin k is (edge[k-1], edge[k]].

    float32 rows (what `Projection.transform` returns) are compared in float32, against
    each edge rounded down to a float32: for a float32 value v, v > edge exactly when v >
    that rounded edge, so the counts are those of a float64 comparison. Other dtypes are
    compared in float64.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float64, copy=False)
    edges = np.asarray(edges, dtype=np.float64)
    n_edges, components = edges.shape
    if x.ndim != 2 or x.shape[1] != components:
        raise ValueError(f"rows must have {components} components, got shape {x.shape}")
    if not np.all(edges[1:] >= edges[:-1]):  # unsorted or NaN edges: no shortcut
        return _bin_counts_by_index(x, edges)
    cut = _round_down_to_float32(edges) if x.dtype == np.float32 else edges
    # Edges sorted in each column: bin k holds the rows above edge k-1 less those above
    # edge k, so a count is `bins - 1` comparisons and column sums, with no per-row index.
    above = np.empty((n_edges + 2, components), dtype=np.int64)  # above[k]: rows > edge[k-1]
    above[0] = x.shape[0]
    above[1:-1] = _rows_above(np.ascontiguousarray(x), cut)
    above[-1] = 0
    return (above[:-1] - above[1:]).T.copy()


def _round_down_to_float32(edges: NDArray[np.float64]) -> NDArray[np.float32]:
    """The largest float32 ≤ each edge (±inf beyond float32's range stay exact)."""
    with np.errstate(over="ignore"):
        rounded = edges.astype(np.float32)
    too_high = rounded.astype(np.float64) > edges
    rounded[too_high] = np.nextafter(rounded[too_high], np.float32(-np.inf))
    return rounded


def _rows_above(x: NDArray[np.floating], edges: NDArray[np.floating]) -> NDArray[np.int64]:
    """`(edges, components)`: how many rows of `x` lie above each edge of their column.

    Per edge this is one comparison and one column sum, written so numpy runs long
    vectorized loops: `group` rows are laid side by side (the edges tiled to match), so a
    loop covers `_LANES` values instead of one row, and the 0/1 results are summed in
    uint8 over at most 255 rows (no widening cast), then added up in int64.
    """
    rows, components = x.shape
    n_edges = edges.shape[0]
    group = max(1, _LANES // max(components, 1))
    whole = rows - rows % group
    wide = x[:whole].reshape(-1, group * components)
    wide_edges = np.tile(edges, (1, group))
    sums = np.zeros((n_edges, group * components), dtype=np.int64)
    hits = np.empty((min(_U8_ROWS, wide.shape[0]), wide.shape[1]), dtype=bool)
    for start in range(0, wide.shape[0], _U8_ROWS):
        block = wide[start : start + _U8_ROWS]
        out = hits[: block.shape[0]]
        for k in range(n_edges):
            np.greater(block, wide_edges[k], out=out)
            sums[k] += out.view(np.uint8).sum(axis=0, dtype=np.uint8)
    above = sums.reshape(n_edges, group, components).sum(axis=1)
    if whole < rows:  # fewer than `group` rows left
        above += (x[whole:, None, :] > edges[None, :, :]).sum(axis=0)
    return above


def _bin_counts_by_index(x: NDArray[np.floating], edges: NDArray[np.floating]) -> NDArray[np.int64]:
    """`bin_counts` for any edges: a row's bin is the number of edges below it.

    The plain definition, kept for unsorted or NaN edges (and as the reference the fast
    path is tested against): float64 comparisons, one bin index per value, one bincount.
    """
    x = np.asarray(x, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
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
    them, never used to decide (see `driftloop_common.ml.drift.detect`)."""
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
