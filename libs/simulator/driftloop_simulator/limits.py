"""Limits and faults, pure: a token bucket per client, the switchable faults, the counters.

Time comes in as an argument (seconds), so a test drives it with a fake clock. Nothing
here awaits: on one event loop every method runs without interleaving.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from driftloop_simulator.settings import FaultSettings


class TokenBucket:
    """`capacity` calls at once, refilled at `rate` per second."""

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.capacity), self.tokens + elapsed * self.rate)
        self.updated = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self, now: float) -> int:
        """Whole seconds until one call is allowed again (at least 1)."""
        self._refill(now)
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))

    def headers(self, now: float) -> dict[str, str]:
        """Genesys's `inin-ratelimit-*`: allowed per window, used so far, seconds to full."""
        self._refill(now)
        used = self.capacity - self.tokens
        return {
            "inin-ratelimit-allowed": str(self.capacity),
            "inin-ratelimit-count": str(math.ceil(used - 1e-9)),
            "inin-ratelimit-reset": str(math.ceil(used / self.rate - 1e-9)),
        }


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    headers: dict[str, str]
    retry_after: int


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, client_id: str, now: float) -> RateDecision:
        bucket = self._buckets.get(client_id)
        if bucket is None:
            bucket = self._buckets[client_id] = TokenBucket(self.rate, self.burst, now)
        allowed = bucket.take(now)
        retry = 0 if allowed else bucket.retry_after(now)
        return RateDecision(allowed=allowed, headers=bucket.headers(now), retry_after=retry)


class Faults:
    """The faults in force; the counted ones are used up by the calls they hit."""

    def __init__(self, initial: FaultSettings) -> None:
        self.current = initial.model_copy()

    def update(self, changes: dict[str, Any]) -> FaultSettings:
        self.current = FaultSettings.model_validate(self.current.model_dump() | changes)
        return self.current

    def clear(self) -> FaultSettings:
        self.current = FaultSettings()
        return self.current

    @property
    def slow_s(self) -> float:
        return self.current.slow_s

    def take_storm(self) -> int | None:
        """Retry-After seconds when this call falls in a 429 storm."""
        if self.current.storm_429 <= 0:
            return None
        self.current.storm_429 -= 1
        return self.current.storm_retry_after_s

    def take_error(self) -> int | None:
        """The 5xx status when this call falls in an error burst."""
        if self.current.error_burst <= 0:
            return None
        self.current.error_burst -= 1
        return self.current.error_status

    def take_training_failure(self) -> bool:
        failing, self.current.fail_next_training = self.current.fail_next_training, False
        return failing


class Stats:
    """What the simulator saw: calls per route and status, in-flight calls, uploads."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        self.peak_in_flight = self.in_flight
        self.uploads = 0
        self.repeated_uploads = 0  # a chunkKey seen before: answered with the first upload
        self.uploaded_interactions = 0
        self.tokens_issued = 0
        self.rate_limited = 0
        self.faults_injected = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self, route: str, status: int) -> None:
        self.in_flight -= 1
        self.calls[(route, status)] += 1

    def snapshot(self) -> dict[str, Any]:
        calls: dict[str, dict[str, int]] = {}
        for (route, status), n in sorted(self.calls.items()):
            calls.setdefault(route, {})[str(status)] = n
        return {
            "calls": calls,
            "total_calls": sum(self.calls.values()),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "uploads": self.uploads,
            "repeated_uploads": self.repeated_uploads,
            "uploaded_interactions": self.uploaded_interactions,
            "tokens_issued": self.tokens_issued,
            "rate_limited": self.rate_limited,
            "faults_injected": self.faults_injected,
        }
