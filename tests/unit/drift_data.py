"""A small stand-in for embedded contact-center traffic: intents as clusters on a sphere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from driftloop_common.contracts.events import EncoderInfo

ENCODER = EncoderInfo(id="test-encoder", precision="fp32")
DIM, INTENTS = 48, 12
T0 = datetime(2026, 11, 1, tzinfo=UTC)


class Traffic:
    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.centers = rng.normal(size=(INTENTS + 1, DIM))  # the last one is "off-topic"
        self.centers /= np.linalg.norm(self.centers, axis=1, keepdims=True)
        self.labels = np.array([f"intent_{i:02d}" for i in range(INTENTS + 1)])

    def sample(self, n: int, rng: np.random.Generator, weights=None) -> tuple[np.ndarray, list]:
        weights = np.ones(INTENTS) / INTENTS if weights is None else np.asarray(weights)
        if weights.size == INTENTS:
            weights = np.append(weights, 0.0)
        which = rng.choice(INTENTS + 1, size=n, p=weights / weights.sum())
        x = self.centers[which] * 1.5 + rng.normal(scale=0.6, size=(n, DIM))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), self.labels[which].tolist()


def shifted_weights(boost: int = 0, points: float = 0.2) -> np.ndarray:
    """Intent `boost` gains `points` of traffic share, taken evenly from the others."""
    w = np.full(INTENTS, (1 - points) / INTENTS)
    w[boost] += points
    return w


def times(n: int, start: datetime = T0, span: timedelta = timedelta(hours=23)) -> list[datetime]:
    step = span / max(n, 1)
    return [start + i * step for i in range(n)]
