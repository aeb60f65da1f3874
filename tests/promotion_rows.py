"""Labelled interactions a promotion reads back: three intents with their own words, in
the train, validation and test windows a version's run records."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np

from driftloop_common.contracts.events import EncoderInfo, InteractionEmbedded
from driftloop_common.storage.interactions import InteractionStore

T = datetime(2026, 11, 1, tzinfo=UTC)
WORDS = {
    "card_lost": ["card", "lost", "stolen", "block", "missing", "wallet"],
    "refund": ["refund", "money", "back", "return", "charge", "reimburse"],
    "password_reset": ["password", "reset", "login", "locked", "forgot", "account"],
}
WINDOWS = {
    "train": (T - timedelta(days=30), T - timedelta(days=10)),
    "validation": (T - timedelta(days=10), T - timedelta(days=5)),
    "test": (T - timedelta(days=5), T),
}


def run_params() -> dict[str, str]:
    """The windows as a trainer's run records them."""
    return {
        f"{split}_{end}": moment.isoformat()
        for split, window in WINDOWS.items()
        for end, moment in zip(("start", "end"), window, strict=True)
    }


def fill_store(url: str, *, shuffled: bool = False, seed: int = 0, language: str = "en-us") -> None:
    rng = random.Random(seed)
    rows = []
    for split, (start, end) in WINDOWS.items():
        for i in range(60):
            label = rng.choice(sorted(WORDS))
            text = " ".join(rng.sample(WORDS[label], 3))
            stored = rng.choice(sorted(WORDS)) if shuffled and split != "test" else label
            rows.append(
                InteractionEmbedded(
                    conversation_id=f"{split}-{seed}-{i}",
                    language=language,
                    completed_at=start + (end - start) * (i + 0.5) / 60,
                    embedding=np.zeros(384, dtype=np.float32).tolist(),
                    encoder=EncoderInfo(id="m", precision="fp32"),
                    label=stored,
                    text=text,
                )
            )
    InteractionStore(url).append(rows)
