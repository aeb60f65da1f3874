"""Drift detection power vs window size on Banking77 embeddings (all-MiniLM-L6-v2).

Run:  .venv/bin/python bench/bench_drift_power.py [--windows 100] [--sizes 250 500 1000 2000 5000]

The baseline is Banking77 train.csv with its intents (`build_baseline` defaults: 7,003
reference rows, 3,000 holdout rows). Windows of each size are drawn from test.csv with
train's intent mix (`tests.realdata.Pool`), then changed by one scenario:

    stable           nothing: the share of flagged windows is the false-alarm rate
    intent +p        the ten card_* intents gain p points of share (+20: 12.9 % → 32.9 %)
    off-topic p %    p % of the rows are e-commerce requests (bitext), unlabelled
    vocabulary p %   p % of the texts end with "for my new Zephyr card"

The brief's scenarios are +20 and 30 %; the weaker ones (+10, +5, 10 %, 5 %) show where
detection stops.

Each window is checked by the default detector (component PSI, labels and the domain
classifier deciding, α = 1 % split over the statistics) and by one without the domain
classifier. Per statistic: the share of windows where it fired (α/5 each in the default).

test.csv holds 40 texts per intent, so a large window (or a boosted intent) needs more rows
of an intent than there are: those rows repeat, and repeats alone inflate the PSI
statistics (see `tests/realdata/__init__.py`). The "repeated" column says how many.

Prints a markdown table for docs/benchmarks.md. Embeddings are cached in --cache (default:
a folder in the system's temporary directory), never in the repository.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `tests.realdata`

from driftloop_common.ml.drift.detect import DetectorConfig, DriftDetector
from driftloop_common.ml.encoder import TextEncoder, available_cpus
from tests.realdata import (
    BANKING77,
    BITEXT,
    Banking,
    EmbeddingCache,
    bitext_texts,
    is_card_intent,
    missing,
    shift_mix,
    snapshot,
    with_phrase,
)

SCENARIOS = {  # name: (kind, amount)
    "stable": ("stable", 0.0),
    "intent +20": ("intent", 0.20),
    "intent +10": ("intent", 0.10),
    "intent +5": ("intent", 0.05),
    "off-topic 30 %": ("off-topic", 0.30),
    "off-topic 10 %": ("off-topic", 0.10),
    "off-topic 5 %": ("off-topic", 0.05),
    "vocabulary 30 %": ("vocabulary", 0.30),
    "vocabulary 10 %": ("vocabulary", 0.10),
    "vocabulary 5 %": ("vocabulary", 0.05),
}
STATISTICS = ("psi_mean", "psi_max", "label_psi", "label_chi2", "domain_auc")
OFF_TOPIC_POOL = 3000  # bitext texts embedded (a window of 5,000 needs 1,500)


class Scenarios:
    def __init__(self, banking: Banking, embed: EmbeddingCache, seed: int) -> None:
        self.banking = banking
        self.zephyr = embed([with_phrase(t) for t in banking.test["text"]])
        others = bitext_texts()
        pick = np.random.default_rng(seed).choice(len(others), OFF_TOPIC_POOL, replace=False)
        self.off_topic = embed([others[i] for i in pick])

    def window(self, scenario: str, n: int, rng: np.random.Generator):
        """(embeddings, labels, rows repeated) of one window, rows in random order."""
        b = self.banking
        kind, amount = SCENARIOS[scenario]
        m = round(amount * n)
        if kind == "off-topic":
            rows = b.pool.draw(n - m, rng, b.prior)
            x = np.concatenate(
                [b.x_test[rows], self.off_topic[rng.choice(OFF_TOPIC_POOL, m, replace=False)]]
            )
            labels = [*b.labels(rows), *[None] * m]
        else:
            prior = shift_mix(b.prior, is_card_intent, amount) if kind == "intent" else b.prior
            rows = b.pool.draw(n, rng, prior)
            x, labels = b.x_test[rows].copy(), b.labels(rows)
            if kind == "vocabulary":
                changed = rng.choice(n, m, replace=False)
                x[changed] = self.zephyr[rows[changed]]
        order = rng.permutation(len(labels))
        repeated = rows.size - np.unique(rows).size
        return x[order], [labels[i] for i in order], repeated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=100, help="windows per cell")
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 5000])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20261102)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "driftloop-bench-embeddings"
    )
    args = parser.parse_args()
    if reason := missing(BANKING77, BITEXT):
        sys.exit(reason)

    started = time.perf_counter()
    encoder = TextEncoder()
    embed = EmbeddingCache(args.cache, encoder.encode)
    banking = Banking.build(embed, encoder.info)
    scenarios = Scenarios(banking, embed, args.seed)
    embedded_s = time.perf_counter() - started

    full = DriftDetector(banking.baseline, DetectorConfig(alpha=args.alpha))
    lite = DriftDetector(
        banking.baseline, DetectorConfig(alpha=args.alpha, detectors=("component_psi", "label"))
    )
    results = []
    for scenario in args.scenarios:
        for n in args.sizes:
            rng = np.random.default_rng([args.seed, n, list(SCENARIOS).index(scenario)])
            fired: Counter[str] = Counter()
            ran: Counter[str] = Counter()
            repeated = 0
            for _ in range(args.windows):
                x, labels, repeats = scenarios.window(scenario, n, rng)
                snap = snapshot(banking.baseline, x, labels)
                report = full.check(snap)
                for score in report.scores:
                    ran[score.statistic] += 1
                    fired[score.statistic] += score.fired
                fired["all"] += report.drifted
                fired["psi+label"] += lite.check(snap).drifted
                repeated += repeats
            results.append((scenario, n, fired, ran, repeated / (args.windows * n)))
            print(f"  {scenario} n={n}: {dict(fired)}", file=sys.stderr, flush=True)

    b = banking.baseline
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(f"machine: {platform.processor() or platform.machine()}, {available_cpus()} CPUs")
    print(
        f"baseline: Banking77 train.csv, {b.n_reference} reference + {b.holdout.shape[0]} holdout "
        f"rows, {b.projection.k} components ({b.projection.explained_variance_ratio:.0%} of "
        f"variance), {len(b.reference_labels)} intents; windows from test.csv "
        f"({len(banking.test)} rows); {args.windows} windows per cell, α = {args.alpha}"
    )
    print(
        f"time: {embedded_s:.0f} s embedding (or cache), "
        f"{time.perf_counter() - started - embedded_s:.0f} s checks"
    )
    print()
    header = ["scenario", "rows", *STATISTICS, "psi+label", "all three", "repeated"]
    print("| " + " | ".join(header) + " |")
    print("|---|---:|" + "---:|" * (len(header) - 2))
    for scenario, n, fired, ran, repeated in results:
        cells = [
            f"{fired[s] / args.windows:.0%}" if ran[s] else "–" for s in STATISTICS
        ]  # "–": skipped (fewer than min_labelled labelled rows)
        cells += [f"**{fired['psi+label'] / args.windows:.0%}**"]
        cells += [f"**{fired['all'] / args.windows:.0%}**", f"{repeated:.0%}"]
        print(f"| {scenario} | {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
