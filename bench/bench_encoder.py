"""Throughput of the text encoder: sentences/s by precision, batching and batch size.

Run:  .venv/bin/python bench/bench_encoder.py [--n 2000] [--threads N]

"sorted" is `TextEncoder.encode` as shipped (batches of texts of similar length).
"unsorted" feeds the same texts in arrival order, one `encode` call per batch, so every
batch pads to its longest text. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from driftloop_common.encoder import TextEncoder, available_cpus

OPENINGS = [
    "hi",
    "hello, I need help",
    "good morning, I am calling because",
    "thanks for waiting, so",
    "yes",
]
TOPICS = [
    "I want to cancel my order",
    "my card was charged twice for the same invoice",
    "where is my parcel, it should have arrived on Monday",
    "the internet keeps dropping every few minutes",
    "I would like to upgrade my plan to the premium tier",
    "I cannot log in, the password reset link has expired",
    "can you tell me my account balance",
    "the agent promised a call back that never came",
    "I want a refund for the damaged item",
    "how do I change the delivery address",
]
FILLERS = [
    "and honestly",
    "I already tried restarting everything",
    "as I said before",
    "my reference number is 4471",
    "this is the third time I am calling",
    "could you please check again",
]


def sentences(n: int, seed: int) -> list[str]:
    """Contact-center-like utterances: many short, some long (transcripts), in random order."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.35:
            parts = [rng.choice(OPENINGS + TOPICS)]
        elif kind < 0.85:
            parts = [rng.choice(OPENINGS), rng.choice(TOPICS), rng.choice(FILLERS)]
        else:
            parts = [rng.choice(TOPICS + FILLERS) for _ in range(rng.randint(6, 20))]
        out.append(", ".join(parts) + ".")
    return out


def unsorted(encoder: TextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """Batches in arrival order: one call per batch leaves `encode` nothing to sort."""
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    return np.vstack([encoder.encode(chunk, batch_size=batch_size) for chunk in chunks])


def timed(encode: Callable[..., np.ndarray], *args: Any) -> tuple[float, np.ndarray]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    vectors = encode(*args)
    return time.perf_counter() - start, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of sentences")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    texts = sentences(args.n, args.seed)
    rows = []
    by_precision: dict[str, np.ndarray] = {}
    for precision in ("fp32", "int8"):
        encoder = TextEncoder(precision=precision, num_threads=args.threads).load()
        encoder.encode(texts[:64])  # warm-up: first-call allocations and kernel selection
        for batch_size in args.batch_sizes:
            seconds, vectors = timed(encoder.encode, texts, batch_size)
            by_precision.setdefault(precision, vectors)
            rows.append((precision, "sorted", batch_size, len(texts) / seconds))
            seconds, _ = timed(unsorted, encoder, texts, batch_size)
            rows.append((precision, "unsorted", batch_size, len(texts) / seconds))

    cosine = np.sum(by_precision["fp32"] * by_precision["int8"], axis=1)
    tokens = [len(t.split()) for t in texts]
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {available_cpus()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"data: {len(texts)} sentences, words per sentence median {int(np.median(tokens))}, "
        f"max {max(tokens)}; int8 vs fp32 cosine mean {cosine.mean():.3f}, "
        f"min {cosine.min():.3f}"
    )
    print()
    print("| precision | batching | batch size | sentences/s |")
    print("|---|---|---:|---:|")
    for precision, batching, batch_size, per_s in rows:
        print(f"| {precision} | {batching} | {batch_size} | {per_s:,.0f} |")


if __name__ == "__main__":
    main()
