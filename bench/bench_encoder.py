"""Throughput of the text encoder: sentences/s by precision, backend, batching and batch size.

Run:  .venv/bin/python bench/bench_encoder.py [--n 2000] [--threads N]
          [--precisions fp32 int8] [--backends onnx torch]

fp32 runs on each of `--backends` (ONNX Runtime, torch eager); int8 only on torch.

Batchings (each tokenizes the texts, then runs the model batch by batch):

    planned         `TextEncoder.encode` as shipped: sorted by token count, cut by
                    `plan_batches` into batches of at most `batch size` texts
    tokens, fixed   sorted by token count, batches of exactly `batch size`
    chars, fixed    sorted by length in characters, batches of exactly `batch size` (what
                    `encode` did before, and what sentence-transformers does)
    unsorted        arrival order, batches of exactly `batch size`: each pads to its longest

Every cell is the median of `--repeat` runs. Prints a markdown table for docs/benchmarks.md.

`--fit-cost` instead times single passes of `rows` texts of `length` tokens and fits
`seconds = c + a · rows · length + b · rows · length²` (relative errors), the cost model behind
`plan_batches` (`BATCH_COST_TOKENS` = c / a, `ATTENTION_COST` = b / a).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from driftloop_common.ml.encoder import MAX_SEQ_LENGTH, TextEncoder, available_cpus

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


def fixed_batches(encoder: TextEncoder, texts: list[str], batch_size: int, key: str) -> None:
    """Batches of exactly `batch_size` texts in the order `key` gives, straight to the
    model (rows are not put back in input order: only the time matters here)."""
    ids = encoder._tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    order = list(range(len(texts)))
    if key == "tokens":
        order.sort(key=lambda i: len(ids[i]), reverse=True)
    elif key == "chars":
        order.sort(key=lambda i: len(texts[i]), reverse=True)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            encoder._embed([ids[i] for i in order[start : start + batch_size]])


def fit_cost(encoder: TextEncoder, repeat: int) -> None:
    """Time passes over a grid of batch shapes; print them and the least-squares fit."""
    shapes = [(r, n) for n in (4, 8, 16, 24, 32, 48, 64) for r in (1, 2, 4, 8, 16, 32, 64)]
    seconds = []
    with torch.inference_mode():
        for rows, length in shapes:
            ids = [[101] + [2000] * (length - 2) + [102]] * rows  # [CLS] "the"… [SEP]
            encoder._embed(ids)  # warm-up
            seconds.append(timed(encoder._embed, ids, repeat=max(repeat, 5))[0])
    # Relative least squares (each row divided by its time): the small passes, where the
    # fixed cost shows, weigh as much as the large ones.
    times = np.array(seconds)
    design = np.array([[1.0, r * n, r * n * n] for r, n in shapes]) / times[:, None]
    (c, a, b), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    print("| rows | tokens | ms per pass | µs per token |")
    print("|---:|---:|---:|---:|")
    for (rows, length), s in zip(shapes, seconds, strict=True):
        print(f"| {rows} | {length} | {s * 1e3:.2f} | {s / (rows * length) * 1e6:.0f} |")
    print(
        f"\nfit: c = {c * 1e3:.2f} ms a pass, a = {a * 1e3:.4f} ms a token, "
        f"b = {b * 1e3:.6f} ms a token per token of length; "
        f"c / a = {c / a:.0f} tokens (BATCH_COST_TOKENS), b / a = 1 / {a / b:.0f} "
        "(ATTENTION_COST)"
    )


def timed(encode: Callable[..., Any], *args: Any, repeat: int = 1) -> tuple[float, Any]:
    """(median seconds, result) of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        vectors = encode(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of sentences")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"], help="for fp32")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fit-cost", action="store_true", help="fit plan_batches' cost model")
    args = parser.parse_args()
    if args.fit_cost:
        encoder = TextEncoder(
            precision=args.precisions[0], num_threads=args.threads, backend=args.backends[0]
        ).load()
        print(f"command: python {shlex.join(sys.argv)}")
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{args.precisions[0]} {encoder.backend}"
        )
        fit_cost(encoder, args.repeat)
        return

    texts = sentences(args.n, args.seed)
    rows = []
    by_precision: dict[str, np.ndarray] = {}
    load_before = os.getloadavg()
    encoder = None
    configs = [
        (precision, backend)
        for precision in args.precisions
        for backend in (args.backends if precision == "fp32" else ["torch"])
    ]
    for precision, backend in configs:
        name = f"{precision} {backend}"
        encoder = TextEncoder(precision=precision, num_threads=args.threads, backend=backend)
        encoder.load()
        encoder.encode(texts[:64])  # warm-up: first-call allocations and kernel selection
        for batch_size in args.batch_sizes:
            seconds, vectors = timed(encoder.encode, texts, batch_size, repeat=args.repeat)
            by_precision.setdefault(name, vectors)
            rows.append((name, "planned", batch_size, len(texts) / seconds))
            for key in ("tokens", "chars", "unsorted"):
                seconds, _ = timed(
                    fixed_batches, encoder, texts, batch_size, key, repeat=args.repeat
                )
                rows.append((name, f"{key}, fixed", batch_size, len(texts) / seconds))

    assert encoder is not None
    words = [len(t.split()) for t in texts]
    tokens = [len(ids) for ids in encoder._tokenizer(texts, truncation=True)["input_ids"]]
    load_after = os.getloadavg()
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {available_cpus()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "load average (1, 5, 15 min) before / after: "
        + " / ".join(", ".join(f"{v:.2f}" for v in load) for load in (load_before, load_after))
    )
    data = (
        f"data: {len(texts)} sentences, words per sentence median {int(np.median(words))}, "
        f"max {max(words)}; tokens median {int(np.median(tokens))}, max {max(tokens)}"
    )
    fp32 = next((v for k, v in by_precision.items() if k.startswith("fp32")), None)
    if fp32 is not None and "int8 torch" in by_precision:
        cosine = np.sum(fp32 * by_precision["int8 torch"], axis=1)
        data += f"; int8 vs fp32 cosine mean {cosine.mean():.3f}, min {cosine.min():.3f}"
    if {"fp32 onnx", "fp32 torch"} <= set(by_precision):
        gap = np.abs(by_precision["fp32 onnx"] - by_precision["fp32 torch"]).max()
        data += f"; fp32 onnx vs torch: largest difference {gap:.1e}"
    print(data)
    print()
    print("| precision, backend | batching | batch size | sentences/s |")
    print("|---|---|---:|---:|")
    for precision, batching, batch_size, per_s in rows:
        print(f"| {precision} | {batching} | {batch_size} | {per_s:,.0f} |")


if __name__ == "__main__":
    main()
