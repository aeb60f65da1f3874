"""Real data sets as drift scenarios: loaders, cached embeddings and window samplers.

Shared by `tests/realdata/` and `bench/bench_drift_power.py`. The data sets are not part of
the project (see `tests/real_data.py`); `missing(...)` says why a caller must skip.

How a *stable* window is drawn matters more than it looks. A window must be an i.i.d.
sample of the baseline's population, which no finite pool of rows is:

- resampling a pool *with* replacement (the bootstrap) repeats rows, and the statistics
  see the extra dispersion: 1,000 rows of Banking77's 3,080 test rows score a mean
  component PSI of 0.0139 drawn with replacement, 0.0112 without, against a null quantile
  of 0.0119 — the bootstrap fires every time;
- Banking77's test split is class-balanced (40 rows per intent) while its train split is
  not (35–187), so drawing from test.csv as it is *is* a label shift (label PSI 0.075).

`Pool.draw` therefore draws each window's intent counts from a prior (for a stable
Banking77 window: train's intent mix) and then rows of each intent *without* replacement; a random
subset of a random sample is again a random sample of the population, so each window is
a fair stable window (only when an intent's pool runs out are rows repeated).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.ml.drift.baseline import DriftBaseline, build_baseline
from driftloop_common.ml.drift.window import SlidingWindow, WindowSnapshot
from tests.real_data import REAL_DATA

BANKING77 = REAL_DATA / "banking77"
BITEXT = REAL_DATA / "bitext-customer-support"
TOD = REAL_DATA / "fb-multilingual-tod"
T0 = datetime(2026, 11, 2, tzinfo=UTC)
ZEPHYR = "for my new Zephyr card"  # the vocabulary shift: a product the baseline never saw


def missing(*folders: Path) -> str | None:
    """Why the real data cannot be used (a skip reason), or None when it is all there."""
    absent = [f.name for f in folders if not f.is_dir()]
    if not absent:
        return None
    return (
        f"real data sets {absent} not found under {REAL_DATA} "
        "(set DRIFTLOOP_REAL_DATA to the shared data folder)"
    )


# ---------------------------------------------------------------- loaders
def banking77(split: str) -> pd.DataFrame:
    """`train` or `test`: columns text, category."""
    return pd.read_csv(BANKING77 / f"{split}.csv", dtype=str, keep_default_na=False)


def bitext_texts() -> list[str]:
    """E-commerce customer-service requests (orders, delivery, invoices…): off-topic for a bank."""
    path = BITEXT / "Bitext_Sample_Customer_Support_Training_Dataset.csv"
    frame = pd.read_csv(path, usecols=["instruction"], dtype=str, keep_default_na=False)
    return frame["instruction"].str.strip().tolist()


def tod(language: str, split: str, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """fb-multilingual-tod `<language>/<split>-<language>.tsv`: columns intent, text.

    The rows are not shuffled (the first 4,000 of en/test have 5.0 % cancel_alarm, the
    file 6.8 %), so `limit` keeps a random subset, not the first rows."""
    path = TOD / language / f"{split}-{language}.tsv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [
            (r[0], r[2].strip()) for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    frame = pd.DataFrame(rows, columns=["intent", "text"])
    if limit is not None and limit < len(frame):
        frame = frame.sample(n=limit, random_state=seed).reset_index(drop=True)
    return frame


def with_phrase(text: str, phrase: str = ZEPHYR) -> str:
    """Append `phrase` before the final punctuation: "Where is my card?" → "… card for my new
    Zephyr card?"."""
    body = text.rstrip()
    end = body[-1] if body and body[-1] in "?.!" else ""
    return f"{body.rstrip('?.! ')} {phrase}{end}"


# ---------------------------------------------------------------- embeddings
class EmbeddingCache:
    """Embeds texts once per cache folder (keyed by the texts' digest): the encoder is slow
    on 2 cores (~13k short texts in ~40 s) and every scenario reuses the same rows."""

    def __init__(self, folder: Path, encode: Callable[[Sequence[str]], NDArray[np.float32]]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._encode = encode

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float32]:
        digest = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:20]
        path = self.folder / f"{digest}.npy"
        if path.exists():
            return np.load(path)
        x = np.asarray(self._encode(list(texts)), dtype=np.float32)
        np.save(path, x)
        return x


# ---------------------------------------------------------------- windows
@dataclass
class Pool:
    """Embedded rows to draw windows from, with their intent labels."""

    x: NDArray[np.float32]
    labels: NDArray[np.str_]
    intents: NDArray[np.str_] = field(init=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        self.intents = np.unique(self.labels)
        self._rows = {c: np.flatnonzero(self.labels == c) for c in self.intents}

    def draw(
        self, n: int, rng: np.random.Generator, prior: pd.Series | None = None
    ) -> NDArray[np.intp]:
        """Row indices of a window of `n`: intent counts ~ Multinomial(n, prior), then rows of
        each intent without replacement (with replacement only once an intent runs out)."""
        if prior is None:
            return rng.choice(self.x.shape[0], size=n, replace=n > self.x.shape[0])
        prior = prior[prior > 0]
        unknown = set(prior.index) - set(self.intents)
        if unknown:
            raise ValueError(f"no rows for intents {sorted(unknown)}")
        counts = rng.multinomial(n, (prior / prior.sum()).to_numpy())
        parts = []
        for intent, k in zip(prior.index, counts, strict=True):
            rows = self._rows[intent]
            parts.append(rng.choice(rows, size=k, replace=k > rows.size))
        return rng.permutation(np.concatenate(parts))


def mix(labels: Sequence[str]) -> pd.Series:
    """Intent shares of `labels`, sorted by intent."""
    return pd.Series(list(labels)).value_counts(normalize=True).sort_index()


def shift_mix(prior: pd.Series, group: Callable[[str], bool], points: float) -> pd.Series:
    """`prior` with the intents in `group` gaining `points` of share together (each in
    proportion to its own share), taken proportionally from the others."""
    inside = np.array([group(c) for c in prior.index])
    share = prior[inside].sum()
    if not 0 < share < 1 or not 0 < share + points < 1:
        raise ValueError(f"cannot move a group of share {share:.3f} by {points}")
    shifted = prior.copy()
    shifted[inside] *= (share + points) / share
    shifted[~inside] *= (1 - share - points) / (1 - share)
    return shifted


def times(n: int, start: datetime = T0, span: timedelta = timedelta(hours=23)) -> list[datetime]:
    """Synthetic `completed_at` times: `n` rows spread evenly over `span` from `start`."""
    step = span / max(n, 1)
    return [start + i * step for i in range(n)]


def snapshot(
    baseline: DriftBaseline,
    x: NDArray[np.floating],
    labels: Sequence[str | None] | None = None,
    start: datetime = T0,
) -> WindowSnapshot:
    """A 24-hour sliding window holding exactly these rows (timestamps spread over 23 h)."""
    window = SlidingWindow(baseline)
    window.add(x, times(len(x), start), labels)
    return window.snapshot()


# ---------------------------------------------------------------- Banking77
def is_card_intent(intent: str) -> bool:
    """The group the intent-mix scenario boosts: the ten `card_*` intents (12.9 % of train)."""
    return intent.startswith("card_")


@dataclass
class Banking:
    """Banking77 as a drift scenario: the baseline is train.csv (as a trainer would build it),
    live traffic is drawn from test.csv, whose texts the baseline never saw."""

    train: pd.DataFrame
    test: pd.DataFrame
    x_test: NDArray[np.float32]
    baseline: DriftBaseline
    prior: pd.Series  # train's intent mix: the mix of a stable window
    pool: Pool

    @classmethod
    def build(cls, embed: EmbeddingCache, encoder: EncoderInfo) -> Banking:
        train, test = banking77("train"), banking77("test")
        baseline = build_baseline(
            embed(train["text"].tolist()),
            encoder=encoder,
            labels=train["category"].tolist(),
            source="banking77 train.csv",
        )
        x_test = embed(test["text"].tolist())
        return cls(
            train=train,
            test=test,
            x_test=x_test,
            baseline=baseline,
            prior=mix(train["category"]),
            pool=Pool(x_test, test["category"].to_numpy()),
        )

    def labels(self, rows: NDArray[np.intp]) -> list[str | None]:
        return self.test["category"].to_numpy()[rows].tolist()

    def texts(self, rows: NDArray[np.intp]) -> list[str]:
        return self.test["text"].to_numpy()[rows].tolist()


# ---------------------------------------------------------------- fb-multilingual-tod
@dataclass(frozen=True)
class Language:
    """One language of fb-multilingual-tod: its model's baseline and a pool of live traffic."""

    baseline: DriftBaseline
    prior: pd.Series  # intent mix of the live pool
    pool: Pool

    def labels(self, rows: NDArray[np.intp]) -> list[str | None]:
        return self.pool.labels[rows].tolist()
