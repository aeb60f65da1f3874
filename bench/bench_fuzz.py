"""Fuzzing at volume: 10,000+ hostile payloads through every decoder and what follows it.

    .venv/bin/python bench/bench_fuzz.py [--n 10000] [--seed 0] [--targets all]
        [--no-sweep] [--json fuzz.json] [--show-crashes 5]

The same harness as `tests/unit/test_fuzz.py` (the property is written there):
`tests/unit/fuzz_harness.py`, imported as `tests.unit.fuzz_harness` with the repository
root put on `sys.path` (the test suite must not import `bench/`, so the shared code lives
with the tests and this script reaches over to it).

1. `--n` payloads (records), shared evenly by the targets: `decode_event`, auditor,
   trainer, evaluator, drift-monitor, collector. Each target's cases come from its
   Hypothesis strategy (generate phase only: no shrinking, no example database), in
   rounds seeded `--seed`, `--seed + 1`, … until its share is reached. A case is one or
   more records run on a fresh service (a drift-monitor poll, a collector's conversations).
2. Unless `--no-sweep`: the field-by-field sweep of the Genesys EventBridge examples
   (and a transcription, a wrap-up and a normalized message), every field × every fixed
   mutation, with the rest of the conversation, through the collector (each mutant on
   its own; a crash is then attributed to one mutant).
3. Prints, per target: cases, payloads, outcomes (decoded, rejected by code, crashed by
   stage and exception type), the slowest case (seconds, bytes, a truncated repr), and
   every kind of crash with its smallest input and the innermost project frame.
   `--json` writes the same as JSON. Exit status 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit import fuzz_harness as fh  # noqa: E402


@dataclass
class Tally:
    """What one target did with its payloads."""

    target: str
    cases: int = 0
    payloads: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest: fh.CaseResult | None = None
    crashes: dict[str, list[fh.CaseResult]] = field(default_factory=dict)  # signature → cases
    names: dict[int, str] = field(default_factory=dict)  # id(result) → sweep mutant

    def add(self, result: fh.CaseResult, name: str = "") -> None:
        self.cases += 1
        self.payloads += len(result.case.records)
        self.payload_bytes += sum(len(r) for r in result.case.records)
        self.seconds += result.seconds
        self.outcomes.update(o.label for o in result.outcomes)
        if self.slowest is None or result.seconds > self.slowest.seconds:
            self.slowest = result
        for crash in result.crashes:
            signature = f"{crash.stage}: {crash.code} at {crash.where or '?'}"
            self.crashes.setdefault(signature, []).append(result)
            if name:
                self.names[id(result)] = name

    def as_json(self, show: int) -> dict[str, Any]:
        slowest = self.slowest
        return {
            "cases": self.cases,
            "payloads": self.payloads,
            "payload_bytes": self.payload_bytes,
            "seconds": round(self.seconds, 3),
            "decoded": self.outcomes["decode:ok"],
            "rejected": {
                label.removeprefix("decode:rejected:"): n
                for label, n in sorted(self.outcomes.items())
                if label.startswith("decode:rejected:")
            },
            "outcomes": dict(sorted(self.outcomes.items())),
            "crashed": sum(len(v) for v in self.crashes.values()),
            "slowest": None if slowest is None else describe_slowest(slowest),
            "crashes": {
                signature: {
                    "count": len(results),
                    "smallest": smallest(results).describe()[:4000],
                    "mutants": sorted({self.names[id(r)] for r in results if id(r) in self.names})[
                        :show
                    ],
                }
                for signature, results in self.crashes.items()
            },
        }


def smallest(results: list[fh.CaseResult]) -> fh.CaseResult:
    return min(results, key=lambda r: sum(len(x) for x in r.case.records))


def describe_slowest(result: fh.CaseResult) -> dict[str, Any]:
    records = result.case.records
    biggest = max(records, key=len) if records else b""
    return {
        "seconds": round(result.seconds, 4),
        "records": len(records),
        "bytes": sum(len(r) for r in records),
        "largest_record_bytes": len(biggest),
        "largest_record": fh._short(biggest, 160),
        "outcomes": [o.label for o in result.outcomes][:12],
    }


def fuzz_target(name: str, payloads: int, first_seed: int, round_cases: int = 500) -> Tally:
    """Cases from the target's strategy until `payloads` records have been run."""
    tally = Tally(name)
    target = fh.TARGETS[name]
    round_ = 0
    while tally.payloads < payloads:
        wanted = payloads - tally.payloads

        @seed(first_seed + round_)
        @settings(
            max_examples=max(1, min(round_cases, wanted)),
            phases=[Phase.generate],
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=target.cases())
        def one(case: fh.FuzzCase) -> None:
            if tally.payloads < payloads:
                tally.add(fh.run(name, case))

        before = tally.cases
        one()
        round_ += 1
        if tally.cases == before:  # the strategy has nothing new to give
            break
    return tally


def sweep() -> Tally:
    tally = Tally("collector (field sweep)")
    for mutant, case in fh.field_sweep():
        tally.add(fh.run("collector", case), mutant)
    return tally


def print_report(console: Console, tallies: list[Tally], show: int) -> None:
    table = Table(title="fuzzing: outcomes per decoder")
    for column in ("target", "cases", "payloads", "decoded", "rejected", "crashed"):
        table.add_column(column, justify="left" if column == "target" else "right")
    table.add_column("after decode (ok)")
    table.add_column("slowest case", justify="right")
    for t in tallies:
        rejected = sum(v for k, v in t.outcomes.items() if k.startswith("decode:rejected:"))
        later = Counter()
        for label, n in t.outcomes.items():
            stage, _, status = label.partition(":")
            if stage != "decode":
                later[f"{stage} {status.replace(':', ' ')}"] += n
        slow = describe_slowest(t.slowest) if t.slowest else {}
        table.add_row(
            t.target,
            f"{t.cases:,}",
            f"{t.payloads:,}",
            f"{t.outcomes['decode:ok']:,}",
            f"{rejected:,}",
            f"{sum(len(v) for v in t.crashes.values()):,}",
            ", ".join(f"{k}: {v:,}" for k, v in sorted(later.items())),
            f"{slow['seconds'] * 1000:.0f} ms, {slow['bytes']:,} B" if slow else "",
        )
    console.print(table)

    codes = Table(title="rejections (PermanentError code) per decoder")
    codes.add_column("target")
    codes.add_column("codes (count)")
    for t in tallies:
        rejected = {
            k.removeprefix("decode:rejected:"): v
            for k, v in t.outcomes.items()
            if k.startswith("decode:rejected:")
        }
        later = {k: v for k, v in t.outcomes.items() if ":rejected:" in k and k not in rejected}
        later = {k: v for k, v in later.items() if not k.startswith("decode:")}
        text = ", ".join(f"{k} {v:,}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1]))
        if later:
            text += "; after decode: " + ", ".join(f"{k} {v:,}" for k, v in sorted(later.items()))
        codes.add_row(t.target, text)
    console.print(codes)

    console.print("slowest case per target:")
    for t in tallies:
        if t.slowest is not None:
            slow = describe_slowest(t.slowest)
            console.print(
                f"  {t.target}: {slow['seconds'] * 1000:.1f} ms, {slow['records']} record(s), "
                f"{slow['bytes']:,} bytes; largest record {slow['largest_record_bytes']:,} "
                f"bytes: {slow['largest_record'][:110]}",
                markup=False,
                highlight=False,
            )
    for t in tallies:
        for signature, results in t.crashes.items():
            console.rule(f"[red]{t.target}: {len(results)} crash(es): {signature}")
            mutants = sorted({t.names[id(r)] for r in results if id(r) in t.names})
            for mutant in mutants[:show]:
                console.print(f"  mutant: {mutant}", markup=False, highlight=False)
            console.print(smallest(results).describe()[:4000], markup=False, highlight=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="payloads shared by the targets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--targets", default="all", help=f"comma-separated, of: {', '.join(fh.TARGETS)}"
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the field-by-field sweep")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--show-crashes", type=int, default=5, help="mutant names per crash")
    args = parser.parse_args()
    names = list(fh.TARGETS) if args.targets == "all" else args.targets.split(",")
    unknown = set(names) - set(fh.TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")

    console = Console(emoji=False, width=None if sys.stdout.isatty() else 160)
    share = math.ceil(args.n / len(names))
    console.print("warming up (imports, the drift baseline)…")
    fh.warm_up()
    started = time.perf_counter()
    tallies = []
    for name in names:
        console.print(f"{name}: {share:,} payloads…", highlight=False)
        tallies.append(fuzz_target(name, share, args.seed))
    if not args.no_sweep:
        console.print("collector: the field-by-field sweep…")
        tallies.append(sweep())
    wall = time.perf_counter() - started

    print_report(console, tallies, args.show_crashes)
    payloads = sum(t.payloads for t in tallies)
    crashed = sum(len(v) for t in tallies for v in t.crashes.values())
    slowest = max((t for t in tallies if t.slowest), key=lambda t: t.slowest.seconds)
    console.print(
        f"{payloads:,} payloads in {sum(t.cases for t in tallies):,} cases, {wall:.1f} s; "
        f"crashed: {crashed}; slowest case: {slowest.target}, "
        f"{slowest.slowest.seconds * 1000:.0f} ms",
        highlight=False,
    )
    if args.json:
        result = {
            "command": " ".join(sys.argv),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "seed": args.seed,
            "wall_seconds": round(wall, 1),
            "payloads": payloads,
            "crashed": crashed,
            "targets": {t.target: t.as_json(args.show_crashes) for t in tallies},
        }
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=True) + "\n")
        console.print(f"wrote {args.json}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
