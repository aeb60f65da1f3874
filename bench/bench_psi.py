"""PSI cost: our count-based check against Evidently's `psi` and the design document's function.

Run:  .venv/bin/python bench/bench_psi.py [--baseline-rows 50000] [--repeats 5]

Data: a synthetic stand-in for MiniLM embeddings (384-d float32, unit length): a mixture of
intent clusters plus anisotropic noise, so that 95 % of the variance needs more principal
components than our cap of 128 (the costly case; real MiniLM traffic was not measured
here). The window is drawn with a shifted intent mix. Seeds are fixed.

Measured, each the median of several `time.perf_counter` repetitions:

    fit             `build_baseline`: split, projection (PCA), quantile edges, reference counts
    window check    counts of a window's projected rows + `psi_from_counts` + `PsiSummary`
                    (what a check costs given the window's rows; the drift-monitor keeps
                    hourly counts, so it pays `SlidingWindow.snapshot()` + `psi_from_counts`
                    + `PsiSummary`, shown too)
    update          `SlidingWindow.add` of a batch of raw rows at their event times, back to
                    back and spaced (`--update-gap-ms` idle before each, as live traffic is):
                    the projection is a small BLAS product, timed with BLAS capped at one
                    thread as the drift-monitor runs it (`DRIFTLOOP_BLAS_THREADS`, default 1;
                    `--blas-threads 0` leaves the libraries' default, one per CPU);
                    `--busy-cpus N` times it again while N processes spin on the CPUs
    Evidently       its `psi` stattest called per column on the same columns (it re-bins
                    reference and current on every call, as its design requires), and its
                    `Report([DataDriftPreset(method="psi")])` on the same data
    design doc      `calculate_psi` (tests/unit/test_psi.py) per projected column, and once
                    over the flattened raw window as the document did; it needs equal sizes,
                    so its reference is the first `window` reference rows

Evidently is optional: without it (it does not import with pandas 3) its rows say why.
`--profile update|check` prints a cProfile of that step instead of the table. The output
names the machine, its load average, and the BLAS/OpenMP thread pools (threadpoolctl).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import inspect
import os
import platform
import pstats
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.ml.drift.baseline import build_baseline
from driftloop_common.ml.drift.psi import PsiSummary, bin_counts, fit_edges, psi, psi_from_counts
from driftloop_common.ml.drift.window import SlidingWindow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.test_psi import design_document_psi

T0 = datetime(2026, 11, 2, tzinfo=UTC)


# ------------------------------------------------------------------ data
class Embeddings:
    """Unit-length mixture: intent centers + a shared offset + anisotropic Gaussian noise."""

    def __init__(self, dim: int, intents: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.centers = rng.normal(size=(intents, dim))
        self.centers /= np.linalg.norm(self.centers, axis=1, keepdims=True)
        self.offset = rng.normal(size=dim)
        self.offset *= 0.4 / np.linalg.norm(self.offset)  # random pairs: cosine ≈ 0.1
        spectrum = np.arange(1, dim + 1) ** -0.5
        self.noise = np.linalg.qr(rng.normal(size=(dim, dim)))[0] * (
            spectrum / np.sqrt((spectrum**2).sum())
        )
        self.intents = intents

    def sample(self, n: int, rng: np.random.Generator, boost: float = 0.0) -> np.ndarray:
        """`boost`: share of traffic moved onto intent 0 (a shifted intent mix)."""
        weights = np.full(self.intents, (1.0 - boost) / self.intents)
        weights[0] += boost
        which = rng.choice(self.intents, size=n, p=weights)
        z = rng.normal(size=(n, self.centers.shape[1]))
        x = self.centers[which] + self.offset + z @ self.noise.T
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)


# ------------------------------------------------------------------ timing
def interleaved_ratio(
    slow: Callable[[], Any], fast: Callable[[], Any], repeats: int
) -> tuple[float, float, float]:
    """(median slow s, median fast s, median of per-pair slow/fast): timing the two in
    alternation keeps a ratio fair when other processes load the machine unevenly."""
    pairs = []
    for _ in range(repeats):
        a = median_seconds(slow, 1, warmup=0)
        b = median_seconds(fast, 3, warmup=0)
        pairs.append((a, b))
    return (
        statistics.median(a for a, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(a / b for a, b in pairs),
    )


def median_seconds(
    fn: Callable[[], Any],
    repeats: int,
    warmup: int = 1,
    gap: float = 0.0,
    spread: list[str] | None = None,
) -> float:
    """Median wall time of `fn`; `gap` seconds of idle (not timed) before each call.
    With `spread`, a line with the 90th percentile and the maximum is appended to it."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        time.sleep(gap)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    if spread is not None:
        p90 = statistics.quantiles(times, n=10)[-1]
        spread.append(f"p90 {p90 * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms")
    return statistics.median(times)


@contextlib.contextmanager
def busy(cpus: int) -> Iterator[None]:
    """`cpus` processes spinning in a loop: other work competing for every core."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def load_evidently() -> tuple[dict[str, Any] | None, str]:
    """Evidently's pieces, or None and why not."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no usage telemetry (there is no network)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import evidently
            import pandas as pd
            from evidently import DataDefinition, Dataset, Report
            from evidently.legacy.calculations.stattests.psi import psi_stat_test
            from evidently.legacy.core import ColumnType
            from evidently.presets import DataDriftPreset
    except ImportError as exc:
        return None, f"evidently does not import here ({type(exc).__name__}: {exc})"
    parts = {
        "version": evidently.__version__,
        "pd": pd,
        "psi_stat_test": psi_stat_test,
        "numerical": ColumnType.Numerical,
        "Report": Report,
        "Dataset": Dataset,
        "DataDefinition": DataDefinition,
        "DataDriftPreset": DataDriftPreset,
    }
    return parts, ""


def evidently_stattest(ev: dict[str, Any], reference: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Evidently's PSI of every column (its stattest, one column at a time)."""
    pd, test, kind = ev["pd"], ev["psi_stat_test"], ev["numerical"]
    return np.array(
        [
            test(pd.Series(reference[:, j]), pd.Series(window[:, j]), kind, None).drift_score
            for j in range(reference.shape[1])
        ]
    )


def evidently_report(ev: dict[str, Any], reference: np.ndarray, window: np.ndarray) -> Any:
    pd = ev["pd"]
    columns = [f"c{j}" for j in range(reference.shape[1])]
    definition = ev["DataDefinition"](numerical_columns=columns)
    current = ev["Dataset"].from_pandas(
        pd.DataFrame(window, columns=columns), data_definition=definition
    )
    ref = ev["Dataset"].from_pandas(
        pd.DataFrame(reference, columns=columns), data_definition=definition
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ev["Report"]([ev["DataDriftPreset"](method="psi")]).run(current, ref)


def design_doc_per_column(reference: np.ndarray, window: np.ndarray) -> np.ndarray:
    return np.array(
        [design_document_psi(reference[:, j], window[:, j]) for j in range(window.shape[1])]
    )


def blas_info() -> list[str]:
    from threadpoolctl import threadpool_info

    lines = []
    for pool in threadpool_info():
        lines.append(
            f"{pool.get('user_api')}: {pool.get('internal_api')} {pool.get('version')}, "
            f"{pool.get('num_threads')} threads, kernel {pool.get('architecture', '-')} "
            f"({Path(pool.get('filepath', '')).name})"
        )
    coretype = {
        k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
    }
    lines.append(f"OpenBLAS environment: {coretype or 'none set'}")
    return lines


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--intents", type=int, default=60)
    parser.add_argument("--window-rows", type=int, default=10_000)
    parser.add_argument("--update-rows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of our steps")
    parser.add_argument("--update-repeats", type=int, default=50)
    parser.add_argument(
        "--update-gap-ms", type=float, default=50.0, help="idle time between spaced updates"
    )
    parser.add_argument("--fit-repeats", type=int, default=3)
    parser.add_argument("--evidently-repeats", type=int, default=3, help="stattest loops")
    parser.add_argument(
        "--report-columns",
        type=int,
        nargs="*",
        default=[16, 0],
        help="column counts for Evidently's Report; 0 = all projected columns (one run each)",
    )
    parser.add_argument("--report-raw", action="store_true", help="also a Report on raw dims")
    parser.add_argument("--profile", choices=["update", "check"], default=None)
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="cap the BLAS pools (numpy's, scipy's OpenBLAS) with threadpoolctl, as the "
        "drift-monitor does (DRIFTLOOP_BLAS_THREADS, default 1); 0: no cap",
    )
    parser.add_argument(
        "--busy-cpus",
        type=int,
        default=0,
        help="also time the update with this many processes spinning on the CPUs",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")
    load_before = os.getloadavg()

    data = Embeddings(args.dim, args.intents, args.seed)
    rng = np.random.default_rng([args.seed, 1])
    x = data.sample(args.baseline_rows, rng)
    window_raw = data.sample(args.window_rows, rng, boost=0.1)
    encoder = EncoderInfo(id="synthetic-minilm-like", precision="fp32")

    # (a) fit
    fit_s = median_seconds(
        lambda: build_baseline(x, encoder=encoder, seed=args.seed), args.fit_repeats, warmup=0
    )
    baseline = build_baseline(x, encoder=encoder, seed=args.seed)
    projection, edges, k = baseline.projection, baseline.edges, baseline.projection.k
    # The same reference rows build_baseline used (its split, reproduced and checked).
    split = inspect.signature(build_baseline).parameters
    n_holdout = min(
        max(int(args.baseline_rows * split["holdout_share"].default), baseline.bins * 5),
        split["max_holdout"].default,
    )
    reference_raw = x[np.random.default_rng(args.seed).permutation(args.baseline_rows)[n_holdout:]]
    reference = projection.transform(reference_raw)
    assert np.array_equal(bin_counts(reference, edges), baseline.reference_counts)
    window = projection.transform(window_raw)

    # (b) window check
    def check_projected() -> PsiSummary:
        values = psi_from_counts(baseline.reference_counts, bin_counts(window, edges))
        return PsiSummary.of(values)

    def check_raw() -> PsiSummary:
        values = psi_from_counts(
            baseline.reference_counts, bin_counts(projection.transform(window_raw), edges)
        )
        return PsiSummary.of(values)

    window_counts = bin_counts(window, edges)

    def ours_check_on(c: int) -> float:
        """Our projected-rows check restricted to the first `c` components."""
        part, part_edges = np.ascontiguousarray(window[:, :c]), edges[:, :c]
        part_reference = baseline.reference_counts[:c]
        return median_seconds(
            lambda: PsiSummary.of(psi_from_counts(part_reference, bin_counts(part, part_edges))),
            args.repeats,
        )

    def check_counts() -> PsiSummary:
        return PsiSummary.of(psi_from_counts(baseline.reference_counts, window_counts))

    raw_edges = fit_edges(reference_raw)
    raw_reference_counts = bin_counts(reference_raw, raw_edges)

    def check_raw_dims() -> PsiSummary:
        values = psi_from_counts(raw_reference_counts, bin_counts(window_raw, raw_edges))
        return PsiSummary.of(values)

    # (c) update: a window already holding a day of traffic, new rows in the newest hour
    def filled_window() -> SlidingWindow:
        sliding = SlidingWindow(baseline, seed=args.seed)
        day = [T0 + i * timedelta(hours=24) / args.window_rows for i in range(args.window_rows)]
        sliding.add(window_raw, day)
        return sliding

    day_window = filled_window()

    def check_snapshot() -> PsiSummary:
        """What the drift-monitor does per check: merge the hourly counts, score them."""
        snapshot = day_window.snapshot()
        return PsiSummary.of(psi_from_counts(baseline.reference_counts, snapshot.counts))

    sliding = filled_window()
    newest = sliding.latest
    assert newest is not None
    batches = [data.sample(args.update_rows, rng, boost=0.1) for _ in range(8)]
    batch_times = [newest + timedelta(milliseconds=i) for i in range(args.update_rows)]
    counter = iter(range(10**9))

    def update() -> None:
        sliding.add(batches[next(counter) % len(batches)], batch_times)

    if args.profile:
        step = update if args.profile == "update" else check_raw
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(200 if args.profile == "update" else 20):
            step()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        return

    rows: list[tuple[str, str, int, float]] = []  # (step, columns, rows, seconds)
    rows.append(("ours: fit (`build_baseline`)", f"{args.dim} → {k}", args.baseline_rows, fit_s))
    checks = {
        "ours: window check, projected rows": (check_projected, str(k)),
        "ours: window check, raw rows (+ projection)": (check_raw, f"{args.dim} → {k}"),
        "ours: window check, from window counts": (check_counts, str(k)),
        "ours: window check, `SlidingWindow.snapshot()` (24 h) + PSI": (check_snapshot, str(k)),
        "ours: window check, raw dimensions": (check_raw_dims, str(args.dim)),
    }
    timed_checks = {}
    for name, (fn, columns) in checks.items():
        seconds = median_seconds(fn, args.repeats)
        timed_checks[name] = seconds
        rows.append((name, columns, args.window_rows, seconds))
    scratch_s = median_seconds(lambda: psi(reference, window), max(1, args.repeats // 2))
    rows.append(
        ("ours from scratch: `psi` (edges + both counts)", str(k), args.window_rows, scratch_s)
    )
    spreads: list[str] = []  # of the update timings, in the order of their rows
    update_s = median_seconds(update, args.update_repeats, warmup=3, spread=spreads)
    rows.append(
        ("ours: `SlidingWindow.add`, back to back", f"{args.dim} → {k}", args.update_rows, update_s)
    )
    spaced_s = median_seconds(
        update, args.update_repeats, gap=args.update_gap_ms / 1e3, spread=spreads
    )
    rows.append(
        (
            f"ours: `SlidingWindow.add`, {args.update_gap_ms:g} ms apart",
            f"{args.dim} → {k}",
            args.update_rows,
            spaced_s,
        )
    )
    if args.busy_cpus:
        spaced = f"{args.update_gap_ms:g} ms apart"
        with busy(args.busy_cpus):
            for name, gap in (("back to back", 0.0), (spaced, args.update_gap_ms / 1e3)):
                seconds = median_seconds(
                    update, args.update_repeats, warmup=3, gap=gap, spread=spreads
                )
                rows.append(
                    (
                        f"ours: `SlidingWindow.add`, {name}, {args.busy_cpus} CPUs kept busy",
                        f"{args.dim} → {k}",
                        args.update_rows,
                        seconds,
                    )
                )

    ev, why_not = load_evidently()
    # (step, columns, rows, seconds, note, ours/theirs ratio measured in alternation or None)
    ev_rows: list[tuple[str, str, int, float | None, str, float | None]] = []
    ev_values = None
    if ev is not None:
        ev_values = evidently_stattest(ev, reference, window)  # also a warm-up
        ev_s, _, ev_ratio = interleaved_ratio(
            lambda: evidently_stattest(ev, reference, window),
            check_projected,
            args.evidently_repeats,
        )
        ev_rows.append(
            ("Evidently: `psi` stattest per column", str(k), args.window_rows, ev_s, "", ev_ratio)
        )
        ev_raw_s, _, ev_raw_ratio = interleaved_ratio(
            lambda: evidently_stattest(ev, reference_raw, window_raw),
            check_raw_dims,
            max(1, args.evidently_repeats - 1),
        )
        ev_rows.append(
            (
                "Evidently: `psi` stattest per column, raw",
                str(args.dim),
                args.window_rows,
                ev_raw_s,
                "",
                ev_raw_ratio,
            )
        )
        reports = [(k if c <= 0 else min(c, k), reference, window) for c in args.report_columns]
        if args.report_raw:
            reports.append((args.dim, reference_raw, window_raw))
        for c, ref_rows, win_rows in reports:
            seconds = median_seconds(
                lambda c=c, r=ref_rows, w=win_rows: evidently_report(ev, r[:, :c], w[:, :c]),
                1,
                warmup=0,
            )
            raw = " on raw dimensions" if ref_rows is reference_raw else ""
            ev_rows.append(
                (
                    f"Evidently: `Report([DataDriftPreset(method='psi')])`{raw}",
                    str(c),
                    args.window_rows,
                    seconds,
                    "one run",
                    None,
                )
            )
    else:
        ev_rows.append(("Evidently", "-", args.window_rows, None, why_not, None))

    doc_reference = reference[: args.window_rows]
    doc_s = median_seconds(
        lambda: design_doc_per_column(doc_reference, window), max(1, args.repeats // 2)
    )
    doc_flat_s = median_seconds(
        lambda: design_document_psi(reference_raw[: args.window_rows].ravel(), window_raw.ravel()),
        max(1, args.repeats // 2),
    )

    # ------------------------------------------------------------ output
    ours_check = timed_checks["ours: window check, projected rows"]
    ours_raw_dims = timed_checks["ours: window check, raw dimensions"]
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"interpreter: {sys.executable} (Python {platform.python_version()})")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; date {datetime.now(UTC):%Y-%m-%d}")
    versions = f"numpy {np.__version__}"
    if ev is not None:
        versions += f", pandas {ev['pd'].__version__}, evidently {ev['version']}"
    print(f"versions: {versions}")
    load_after = os.getloadavg()
    print(
        "load average (1, 5, 15 min) before / after: "
        + " / ".join(", ".join(f"{v:.1f}" for v in load) for load in (load_before, load_after))
    )
    for line in blas_info():
        print(f"threads: {line}")
    print(
        f"data: baseline {args.baseline_rows:,} × {args.dim} float32 (reference "
        f"{reference.shape[0]:,}, holdout {baseline.holdout.shape[0]:,}), {k} components "
        f"({projection.explained_variance_ratio:.0%} of the variance), {baseline.bins} bins; "
        f"window {args.window_rows:,} rows (intent 0 +10 points), updates of "
        f"{args.update_rows} rows"
    )
    ours_values = psi_from_counts(baseline.reference_counts, window_counts)
    line = f"component PSI mean: ours {ours_values.mean():.4f}"
    if ev_values is not None:
        line += f", Evidently (Sturges bins, its smoothing) {ev_values.mean():.4f}"
    print(line)
    print(
        f"memory: SlidingWindow after {args.window_rows:,} rows over 24 h "
        f"{filled_window().memory_bytes() / 2**20:.1f} MiB; after the update runs "
        f"{sliding.memory_bytes() / 2**20:.1f} MiB; bound with every hourly reservoir full "
        f"(25 buckets × ({k}×{baseline.bins} counts + {sliding.sample_size}×{k} float32)) "
        f"{25 * (k * baseline.bins * 8 + sliding.sample_size * k * 4) / 2**20:.1f} MiB"
    )
    print()
    print("| step | columns | rows | median | rows/s | ours check is × faster |")
    print("|---|---:|---:|---:|---:|---:|")

    def fmt(seconds: float) -> str:
        return f"{seconds * 1e3:,.2f} ms" if seconds < 1 else f"{seconds:,.2f} s"

    for name, columns, n, seconds in rows:
        print(f"| {name} | {columns} | {n:,} | {fmt(seconds)} | {n / seconds:,.0f} | |")
    for name, columns, n, seconds, note, ratio in ev_rows:
        if seconds is None:
            print(f"| {name} | {columns} | {n:,} | skipped: {note} | | |")
            continue
        if ratio is None:  # against our projected-rows check on as many columns
            if columns == str(args.dim):
                ratio = seconds / ours_raw_dims
            elif columns == str(k):
                ratio = seconds / ours_check
            else:
                ratio = seconds / ours_check_on(int(columns))
        label = f"{name} ({note})" if note else name
        print(
            f"| {label} | {columns} | {n:,} | {fmt(seconds)} | {n / seconds:,.0f} | {ratio:,.0f}× |"
        )
    print(
        f"| design doc: `calculate_psi` per column (reference = {args.window_rows:,} rows) "
        f"| {k} | {args.window_rows:,} | {fmt(doc_s)} | {args.window_rows / doc_s:,.0f} "
        f"| {doc_s / ours_check:,.1f}× |"
    )
    print(
        f"| design doc: `calculate_psi` on the flattened raw window (one histogram) "
        f"| {args.dim} (flattened) | {args.window_rows:,} | {fmt(doc_flat_s)} "
        f"| {args.window_rows / doc_flat_s:,.0f} | {doc_flat_s / ours_raw_dims:,.1f}× |"
    )
    print()
    snapshot_s = timed_checks["ours: window check, `SlidingWindow.snapshot()` (24 h) + PSI"]
    if ev is not None:
        ev_s, ev_ratio = ev_rows[0][3], ev_rows[0][5]
        assert ev_s is not None and ev_ratio is not None
        print(
            f"target window check ≥ 90× faster than Evidently's stattest on the same {k} "
            f"columns: {ev_ratio:,.0f}× binning the window's rows (median of alternated "
            f"pairs), {ev_s / snapshot_s:,.0f}× from the SlidingWindow's counts"
        )
    else:
        print("target window check ≥ 90× faster than Evidently: not measured (no evidently)")
    print(
        f"target {args.update_rows}-row update ≤ 1 ms: {update_s * 1e3:.2f} ms back to back, "
        f"{spaced_s * 1e3:.2f} ms with {args.update_gap_ms:g} ms between updates"
    )
    updates = [name for name, *_ in rows if "SlidingWindow.add" in name]
    for name, spread in zip(updates, spreads, strict=True):
        print(f"  {name.removeprefix('ours: ')}: {spread}")


if __name__ == "__main__":
    main()
