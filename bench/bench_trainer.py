"""One whole training at scale: store read → head selection → metrics → MLflow run + version.

Run:  .venv/bin/python bench/bench_trainer.py [--sizes 10000,50000,200000] [--classes 40]

Data: N interactions over the 90 days of the default split (so ~2/3 train, ~1/4
validation, ~1/15 test), stored with 384-d unit vectors drawn around one centroid per
class (a stand-in for stored MiniLM embeddings, which the trainer never recomputes) and
short texts of random filler, half of them with a class word (the head's lexical features
need text). Each size runs in its own subprocess, so the peak RSS (ru_maxrss) is that size's.
The MLflow server is a local one (SQLite), started once. Timings are wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = "please help account card order refund payment delivery password balance".split()


def fill_store(url: str, n: int, classes: int, as_of: datetime, seed: int) -> None:
    from driftloop_common.contracts.events import EncoderInfo, InteractionEmbedded
    from driftloop_common.ml.encoder import MODEL_ID
    from driftloop_common.storage.interactions import InteractionStore

    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(classes, 384))
    labels = rng.integers(0, classes, n)
    named = rng.random(n) < 0.5  # half the texts name their class, half are filler
    x = centroids[labels] + rng.normal(scale=6.0, size=(n, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    start = as_of - timedelta(days=90)
    seconds = rng.uniform(0, (timedelta(days=89)).total_seconds(), n)
    encoder = EncoderInfo(id=MODEL_ID, precision="fp32")
    store = InteractionStore(url)
    for chunk in range(0, n, 20_000):
        rows = range(chunk, min(n, chunk + 20_000))
        store.append(
            InteractionEmbedded(
                conversation_id=f"c{i}",
                language="en-us",
                completed_at=start + timedelta(seconds=float(seconds[i])),
                embedding=x[i].astype(np.float32).tolist(),
                encoder=encoder,
                label=f"intent_{labels[i]}",
                text=(f"intent{labels[i]} " if named[i] else "") + " ".join(rng.choice(WORDS, 4)),
            )
            for i in rows
        )


def one_size(n: int, classes: int, tracking_uri: str) -> dict:
    from driftloop_common.contracts.events import TrainingRequested, TrainingRequestedEvent
    from driftloop_common.runtime.settings import MlflowSettings
    from driftloop_trainer.training import Trainer, TrainerConfig

    as_of = datetime(2026, 11, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fill_store(tmp, n, classes, as_of, seed=n)
        filled = time.perf_counter() - started
        request = TrainingRequestedEvent(
            producer="bench",
            model_key="intent/en-us",
            payload=TrainingRequested(reason="manual", requested_by="bench", as_of=as_of),
        )
        trainer = Trainer(
            TrainerConfig(mlflow=MlflowSettings(tracking_uri=tracking_uri), store_url=tmp)
        )
        steps: list[tuple[float, str]] = []
        started = time.perf_counter()
        result = trainer.train(
            request, lambda step: steps.append((time.perf_counter() - started, step))
        )
        seconds = time.perf_counter() - started
    return {
        "rows": n,
        "fill_s": round(filled, 1),
        "train_s": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "outcome": result.event_type,
        "test_macro_f1": round(result.payload.metrics.get("test_macro_f1", float("nan")), 4)
        if hasattr(result.payload, "metrics")
        else None,
        "steps": [(round(t, 1), s) for t, s in steps],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.classes, args.tracking_uri)))
        return

    from driftloop_local.mlflow import LocalMlflow

    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalMlflow(Path(tmp))
        uri = server.start()
        try:
            print(
                "| interactions | store fill (s) | training (s) | peak RSS (MiB) | test macro-F1 |"
            )
            print("|---:|---:|---:|---:|---:|")
            for n in (int(s) for s in args.sizes.split(",")):
                out = subprocess.run(
                    [
                        *(sys.executable, __file__, "--one", str(n)),
                        *("--classes", str(args.classes), "--tracking-uri", uri),
                    ],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"| {n} | failed: {out.stderr.strip().splitlines()[-1]} |")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"| {n:,} | {r['fill_s']} | {r['train_s']} | {r['peak_rss_mib']} "
                    f"| {r['test_macro_f1']} |",
                    flush=True,
                )
                for t, step in r["steps"]:
                    print(f"    {t:7.1f}s  {step}", file=sys.stderr)
        finally:
            server.stop()
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
