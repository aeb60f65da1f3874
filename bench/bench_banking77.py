"""The text trainer's default head on Banking77: test accuracy, macro-F1, time and memory.

Run:  .venv/bin/python bench/bench_banking77.py [--cache DIR] [--sizes 10000,50000,200000]

1. Embeds train.csv and test.csv once with `TextEncoder` (fp32), cached as .npy in --cache
   (keyed by the texts' digest, as `tests.realdata.EmbeddingCache` does).
2. Quality: a seeded stratified 20 % of train.csv is the validation split; the default
   `select_and_fit` chooses on it, refits on all of train.csv, and is scored once on
   test.csv. The reference is plain logistic regression on the embeddings with C among
   1/10/30/100 chosen on the same validation rows (the literature's recipe). Nothing is
   chosen on test.csv.
3. Scale: `select_and_fit` on N synthetic interactions (80 % train, 20 % validation,
   refit on both) made from train.csv: rows drawn with replacement, each embedding moved by
   Gaussian noise (σ = --noise per dimension) and renormalised to unit length, and half of
   the texts of 3+ words lose one random word, so that the tf-idf member sees new strings.

Every measured fit runs in its own child process, so its peak RSS (`ru_maxrss`) is its own;
"RSS before" is the child's resident memory after imports and data, right before the fit.
BLAS threads while fitting: the head's default (`HeadGrid.blas_threads`).
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
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `tests.realdata`
from driftloop_common.ml.modeling.text_head import HeadGrid, TextExamples, select_and_fit
from tests.realdata import BANKING77, EmbeddingCache, banking77, missing

REFERENCE_C = (1.0, 10.0, 30.0, 100.0)


# ------------------------------------------------------------------ data
def embedded(cache: Path) -> tuple[dict[str, Any], float]:
    """{split: (texts, labels, embeddings)} and the seconds spent embedding (0: cached)."""
    calls: list[float] = []

    def encode(texts: list[str]) -> np.ndarray:
        from driftloop_common.ml.encoder import TextEncoder

        started = time.perf_counter()
        x = TextEncoder().load().encode(texts)
        calls.append(time.perf_counter() - started)
        return x

    embed = EmbeddingCache(cache, encode)
    out = {}
    for split in ("train", "test"):
        frame = banking77(split)
        texts = frame["text"].tolist()
        out[split] = (texts, frame["category"].to_numpy(dtype=object), embed(texts))
    return out, sum(calls)


def validation_rows(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A seeded stratified split: a boolean mask of the validation rows."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    _, val = train_test_split(rows, test_size=share, stratify=labels, random_state=seed)
    mask = np.zeros(len(labels), dtype=bool)
    mask[val] = True
    return mask


def examples(texts: list[str], labels: np.ndarray, x: np.ndarray, rows: np.ndarray) -> TextExamples:
    idx = np.flatnonzero(rows) if rows.dtype == bool else rows
    return TextExamples([texts[i] for i in idx], x[idx], labels[idx])


def synthetic(
    texts: list[str], labels: np.ndarray, x: np.ndarray, n: int, noise: float, seed: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`n` rows resampled from (texts, labels, x): noisy unit embeddings, some words dropped."""
    rng = np.random.default_rng([seed, n])
    rows = rng.integers(0, len(texts), size=n)
    moved = x[rows] + rng.normal(scale=noise, size=(n, x.shape[1])).astype(np.float32)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    out = []
    for i, drop in zip(rows, rng.random(n) < 0.5, strict=True):
        words = texts[i].split()
        if drop and len(words) >= 3:
            del words[rng.integers(len(words))]
        out.append(" ".join(words))
    return out, labels[rows], moved


# ------------------------------------------------------------------ measured runs (children)
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_quality(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    data, _ = embedded(args.cache)
    texts, labels, x = data["train"]
    val = validation_rows(labels, args.validation, args.seed)
    train, validation = examples(texts, labels, x, ~val), examples(texts, labels, x, val)
    test = TextExamples(data["test"][0], data["test"][2])
    before = rss_mb()
    lines: list[str] = []
    started = time.perf_counter()
    head, selection = select_and_fit(train, validation, seed=args.seed, progress=lines.append)
    seconds = time.perf_counter() - started
    pred = head.predict(test)
    truth = data["test"][1]
    return {
        "accuracy": accuracy_score(truth, pred),
        "macro_f1": f1_score(truth, pred, average="macro"),
        "seconds": seconds,
        "selection_s": selection.seconds["selection"],
        "final_s": selection.seconds["final_fit"],
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "params": selection.params,
        "candidates": selection.candidates,
        "rows": (len(train.labels), len(validation.labels), len(truth)),
        "progress": lines,
    }


def run_reference(args: argparse.Namespace) -> dict[str, Any]:
    """Plain LR on the embeddings, C on validation macro-F1, refit on all of train.csv."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from threadpoolctl import threadpool_limits

    data, _ = embedded(args.cache)
    _, labels, x = data["train"]
    val = validation_rows(labels, args.validation, args.seed)
    before = rss_mb()
    started = time.perf_counter()
    scores = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for c in REFERENCE_C:
            model = LogisticRegression(C=c, max_iter=1000).fit(x[~val], labels[~val])
            scores[c] = f1_score(labels[val], model.predict(x[val]), average="macro")
        best = max(REFERENCE_C, key=lambda c: scores[c])
        model = LogisticRegression(C=best, max_iter=1000).fit(x, labels)
    seconds = time.perf_counter() - started
    pred = model.predict(data["test"][2])
    truth = data["test"][1]
    return {
        "accuracy": accuracy_score(truth, pred),
        "macro_f1": f1_score(truth, pred, average="macro"),
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "params": {"C": best},
        "validation_macro_f1": {str(c): s for c, s in scores.items()},
    }


def run_scale(args: argparse.Namespace, n: int) -> dict[str, Any]:
    data, _ = embedded(args.cache)
    texts, labels, x = synthetic(*data["train"], n=n, noise=args.noise, seed=args.seed)
    val = validation_rows(labels, args.validation, args.seed)
    train, validation = examples(texts, labels, x, ~val), examples(texts, labels, x, val)
    del data, texts, labels, x
    before = rss_mb()
    lines: list[str] = []
    started = time.perf_counter()
    _, selection = select_and_fit(train, validation, seed=args.seed, progress=lines.append)
    return {
        "n": n,
        "seconds": time.perf_counter() - started,
        "selection_s": selection.seconds["selection"],
        "final_s": selection.seconds["final_fit"],
        "fit_rows": selection.fit_rows,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "params": selection.params,
        "macro_f1": selection.best["macro_f1"],
        "progress": lines,
    }


def child(args: argparse.Namespace, what: str) -> dict[str, Any]:
    """Run `what` in a fresh interpreter; its JSON result."""
    command = [sys.executable, __file__, "--child", what, *args.passed]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ report
def candidate_table(candidates: list[dict[str, Any]]) -> list[str]:
    """One row per (class weight, embedding C, lexical C): its best blend weight."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in candidates:
        p = c["params"]
        key = (str(p["class_weight"]), p["embedding_C"] or 0.0, p["lexical_C"] or 0.0)
        if key not in rows or c["macro_f1"] > rows[key]["macro_f1"]:
            rows[key] = c
    out = [
        "| class weight | embedding C | tf-idf C | best w | T | macro-F1 | accuracy | log loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(rows):
        c = rows[key]
        p = c["params"]
        out.append(
            f"| {p['class_weight']} | {p['embedding_C'] or '–'} | {p['lexical_C'] or '–'} "
            f"| {p['blend_weight']:.1f} | "
            + (f"{p['lexical_temperature']:.3f}" if p["lexical_temperature"] else "–")
            + f" | {c['macro_f1']:.4f} | {c['accuracy']:.4f} | {c['log_loss']:.3f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/banking77_cache"), help="embedding cache"
    )
    parser.add_argument(
        "--sizes", default="10000,50000,200000", help="comma-separated row counts ('' skips)"
    )
    parser.add_argument("--validation", type=float, default=0.2, help="validation share")
    parser.add_argument("--noise", type=float, default=0.01, help="σ per dimension (scale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print every fit's progress")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.passed = [
        f"--cache={args.cache}",
        f"--validation={args.validation}",
        f"--noise={args.noise}",
        f"--seed={args.seed}",
    ]
    if reason := missing(BANKING77):
        sys.exit(reason)
    if args.child:
        if args.child == "quality":
            result = run_quality(args)
        elif args.child == "reference":
            result = run_reference(args)
        else:
            result = run_scale(args, int(args.child))
        print(json.dumps(result, default=float))
        return

    _, embed_s = embedded(args.cache)  # embeds once here, so that no child does
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    quality, reference = child(args, "quality"), child(args, "reference")
    scale = [child(args, str(n)) for n in sizes]

    cpus = len(os.sched_getaffinity(0))
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"machine: {platform.machine()}, {cpus} CPUs, load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at the end; "
        f"embedding: {'cached' if not embed_s else f'{embed_s:.0f} s'}"
    )
    n_train, n_val, n_test = quality["rows"]
    print(
        f"Banking77: {n_train:,} train + {n_val:,} validation rows (train.csv, stratified, "
        f"seed {args.seed}), refit on all {n_train + n_val:,}; test.csv {n_test:,} rows"
    )
    print()
    print("| head | chosen on validation | test accuracy | test macro-F1 | fit s | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in (("plain LR on embeddings", reference), ("default head", quality)):
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()
        )
        print(
            f"| {name} | {params} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} "
            f"| {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    print()
    print(
        f"Default head fit: selection {quality['selection_s']:.1f} s + final fit "
        f"{quality['final_s']:.1f} s; RSS before the fit {quality['rss_before_mb']:.0f} MB."
    )
    print(
        "Reference validation macro-F1 by C: "
        + ", ".join(f"{c}: {s:.4f}" for c, s in reference["validation_macro_f1"].items())
    )
    print()
    print("Validation candidates (best blend weight w per member pair; w = 0: embedding only,")
    print("w = 1: tf-idf only; T: the tf-idf member's temperature):")
    print()
    print("\n".join(candidate_table(quality["candidates"])))
    if scale:
        print()
        print(
            f"Scale: synthetic rows from train.csv (drawn with replacement, embedding + "
            f"N(0, {args.noise}²) per dimension then unit norm, half the texts of 3+ words "
            f"lose one word); {1 - args.validation:.0%} train / {args.validation:.0%} "
            "validation, refit on both."
        )
        print()
        print(
            "| rows | selection rows | selection s | final fit s | total s | RSS before MB "
            "| peak RSS MB | chosen |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in scale:
            p = r["params"]
            chosen = (
                f"emb C={p['embedding_C']}, tf-idf C={p['lexical_C']}, "
                f"{p['class_weight']}, w={p['blend_weight']}"
            )
            print(
                f"| {r['n']:,} | {r['fit_rows']:,} | {r['selection_s']:.1f} | {r['final_s']:.1f} "
                f"| {r['seconds']:.1f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} "
                f"| {chosen} |"
            )
    print()
    print(f"HeadGrid defaults: {HeadGrid()}")
    if args.verbose:
        for name, r in [("Banking77", quality)] + [(f"{r['n']:,} rows", r) for r in scale]:
            print(f"\nfit log, {name}:")
            print("\n".join(f"    {line}" for line in r["progress"]))


if __name__ == "__main__":
    main()
