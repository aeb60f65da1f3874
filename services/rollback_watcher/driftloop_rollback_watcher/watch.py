"""Per model key: the live version, its reference, a window of its confidences, and the
rollback it may call for.

Pure with respect to Kafka: `apply` takes `model.promoted` / `model.rolled_back`, `observe`
takes a `prediction` and returns the `rollback.requested` to publish (or nothing). Time is
the events' own `occurred_at`, so replaying the same events after a restart reaches the
same decisions with the same ids.

    live       the version of the newest `model.promoted` (its reference: the confidence
               and accuracy the evaluation measured) or `model.rolled_back` (`to_version`;
               its reference is what that version's promotion recorded, if seen — else no
               decision until a promotion of it is seen). A state event already applied
               (same id) or older than the live one (a replay) changes nothing live.
    window     the live version's confidences over the last `window_minutes` of event time,
               counted from its newest prediction and never from before it went live.
               Predictions of another version, of a key without live version, or older
               than the window are ignored and counted.
    signals    with at least `min_predictions` in the window:
               `confidence`  the window's mean confidence is more than `confidence_drop`
                             (relative) below the reference confidence;
               `estimate`    the label-free accuracy estimate — the mean top-class
                             probability, which is the expected accuracy of a calibrated
                             model (CBPE) — is more than `estimate_drop` (absolute) below
                             the accuracy the promotion recorded, and that accuracy is
                             above the estimate's own bootstrap band (`estimate_band`, 95 %
                             by default): a drop the window's noise does not explain.
    decision   one `rollback.requested` per live version (its id derived from the event
               that made it live); none while a version restored by a rollback is inside
               its `cooldown_minutes` (anti-flap; counted as held).
    stages     a staged version (`model.promoted` with stage `shadow` or `canary`) gets a
               window of its own, fed by the predictions of that stage, judged against its
               own promotion's reference in the same way; its `rollback.requested` names it
               (`from_version`), which ends the stage and leaves the champion live. A
               `model.rolled_back` of a stage, or the version's promotion to champion,
               ends its window.
"""

from __future__ import annotations

import bisect
import logging
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from driftloop_common.contracts.events import (
    Event,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    PredictionEvent,
    RollbackRequested,
    RollbackRequestedEvent,
    Stage,
)

log = logging.getLogger(__name__)
SERVICE = "rollback-watcher"

Signal = Literal["confidence", "estimate"]
SIGNALS: tuple[Signal, ...] = ("confidence", "estimate")
IGNORE_REASONS = ("no_live_version", "other_version", "stale")
"""Why a prediction is left out of a window (`RollbackWatcher.ignored`, a metric label)."""
HOLD_REASONS = ("cooldown", "no_reference")
"""Why a window past `min_predictions` decided nothing (`RollbackWatcher.held`)."""


class WatchConfig(BaseModel):
    """How the watcher windows and decides. The rollback-watcher's settings carry it (one
    `DRIFTLOOP_…` variable per field: `DRIFTLOOP_WINDOW_MINUTES`, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_minutes: float = Field(default=15.0, gt=0)
    min_predictions: int = Field(default=200, gt=0)
    # Relative: 0.10 fires when the window's mean confidence < 90 % of the reference.
    confidence_drop: float = Field(default=0.10, gt=0, lt=1)
    # Absolute: 0.10 fires when the estimated accuracy < the promotion's accuracy - 0.10.
    estimate_drop: float = Field(default=0.10, gt=0, le=1)
    # The estimate's bootstrap interval (level, resamples): the estimate signal needs the
    # promotion's accuracy above it.
    estimate_band: float = Field(default=0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(default=200, ge=20)
    # A version restored by a rollback is not rolled back automatically for this long.
    cooldown_minutes: float = Field(default=60.0, ge=0)
    # Promotions and rollbacks read back at start-up: a rolled-back-to version's reference
    # is its promotion's, which may be this old.
    history_hours: float = Field(default=720.0, gt=0)

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.window_minutes)

    @property
    def cooldown(self) -> timedelta:
        return timedelta(minutes=self.cooldown_minutes)

    @property
    def history(self) -> timedelta:
        return timedelta(hours=self.history_hours)


@dataclass(frozen=True)
class Reference:
    """What a version's promotion recorded: mean confidence and accuracy at evaluation."""

    confidence: float | None
    accuracy: float | None

    @classmethod
    def of(cls, event: ModelPromotedEvent) -> Reference:
        p = event.payload
        return cls(confidence=p.confidence_at_promotion, accuracy=p.expected_accuracy)


class ConfidenceWindow:
    """Confidences by event time, oldest first, with a running sum: O(1) mean."""

    def __init__(self) -> None:
        self._items: deque[tuple[datetime, float]] = deque()
        self._sum = 0.0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def newest(self) -> datetime | None:
        return self._items[-1][0] if self._items else None

    @property
    def mean(self) -> float | None:
        return self._sum / len(self._items) if self._items else None

    def add(self, at: datetime, confidence: float) -> None:
        if self._items and at < self._items[-1][0]:  # late within its partition: rare
            bisect.insort(self._items, (at, confidence))
        else:
            self._items.append((at, confidence))
        self._sum += confidence

    def values(self) -> np.ndarray:
        return np.fromiter((c for _, c in self._items), dtype=np.float64, count=len(self._items))

    def drop_before(self, cutoff: datetime) -> None:
        while self._items and self._items[0][0] < cutoff:
            self._sum -= self._items.popleft()[1]
        if not self._items:
            self._sum = 0.0  # no rounding left over from the subtractions


@dataclass
class Live:
    """The version live for a key, since when, and what made it live."""

    version: int
    since: datetime
    cause: Event  # the promotion or rollback: the seed of the decision's id
    restored: bool  # live because of a rollback: the cooldown applies
    reference: Reference | None
    window: ConfidenceWindow = field(default_factory=ConfidenceWindow)
    requested: bool = False
    stage: Stage = "champion"

    @classmethod
    def made_by(
        cls,
        event: Event,
        version: int,
        reference: Reference | None,
        *,
        restored: bool = False,
        stage: Stage = "champion",
    ) -> Live:
        """The version `event` made live (or staged), from the event's time on."""
        return cls(version, event.occurred_at, event, restored, reference, stage=stage)


@dataclass(frozen=True)
class Check:
    """The numbers of a key's latest window, for metrics and the rollback's reason."""

    mean: float
    n: int
    reference: Reference | None
    signals: tuple[Signal, ...]
    band: tuple[float, float] | None = None  # the estimate's bootstrap band, when computed


def bootstrap_band(values: np.ndarray, level: float, samples: int) -> tuple[float, float]:
    """The percentile bootstrap interval of `values`' mean. Seeded by the window's length,
    so a replay of the same window draws the same band."""
    rng = np.random.default_rng(len(values))
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


class RollbackWatcher:
    """Live versions, windows and decisions of every model key (see the module docstring)."""

    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.keys: dict[ModelKey, Live] = {}
        self.staged: dict[ModelKey, Live] = {}  # a shadow or canary version, beside the live one
        self.references: dict[tuple[ModelKey, int], Reference] = {}
        self.last_checks: dict[ModelKey, Check] = {}
        self.ignored: Counter[tuple[ModelKey, str]] = Counter()
        self.held: Counter[tuple[ModelKey, str]] = Counter()
        self.requested: Counter[tuple[ModelKey, Signal]] = Counter()
        self._applied: set[uuid.UUID] = set()
        self._requested_ids: set[uuid.UUID] = set()

    # ----------------------------------------------------------- what is live

    def apply(self, event: ModelPromotedEvent | ModelRolledBackEvent) -> bool:
        """Record a promotion or a rollback; True when it changed the live version."""
        if event.event_id in self._applied:
            return False
        self._applied.add(event.event_id)
        key = event.model_key
        if event.payload.stage != "champion":
            return self._apply_stage(event)
        if isinstance(event, ModelPromotedEvent):
            version, restored = event.payload.version, False
            self.references[(key, version)] = Reference.of(event)
            staged = self.staged.get(key)
            if staged is not None and staged.version <= version:  # it went live, or is older
                del self.staged[key]
        else:
            version, restored = event.payload.to_version, True
        live = self.keys.get(key)
        if live is not None and live.version == version and live.reference is None:
            live.reference = self.references.get((key, version))  # seen at last
        if live is not None and event.occurred_at < live.since:
            return False  # a replay of an older change
        self.keys[key] = Live.made_by(
            event, version, self.references.get((key, version)), restored=restored
        )
        self.last_checks.pop(key, None)
        log.info("%s: v%d live since %s (%s)", key, version, event.occurred_at, event.event_type)
        return True

    def _apply_stage(self, event: ModelPromotedEvent | ModelRolledBackEvent) -> bool:
        """A version entering a stage gets a window; one whose stage ended loses it."""
        key = event.model_key
        staged = self.staged.get(key)
        if isinstance(event, ModelRolledBackEvent):
            if staged is not None and staged.version == event.payload.from_version:
                del self.staged[key]
                log.info("%s: the %s v%d stage ended", key, staged.stage, staged.version)
            return False
        version = event.payload.version
        self.references[(key, version)] = Reference.of(event)
        if staged is not None and event.occurred_at < staged.since:
            return False  # a replay of an older stage
        reference = self.references[(key, version)]
        self.staged[key] = Live.made_by(event, version, reference, stage=event.payload.stage)
        log.info("%s: v%d in %s since %s", key, version, event.payload.stage, event.occurred_at)
        return False

    def remember_request(self, event: RollbackRequestedEvent) -> None:
        """One of our own earlier requests (read back at start-up): not made twice."""
        self._requested_ids.add(event.event_id)

    def reset_windows(self) -> None:
        """Forget every window (they are re-read from Kafka by time)."""
        for live in [*self.keys.values(), *self.staged.values()]:
            live.window = ConfidenceWindow()
        self.last_checks.clear()

    # ----------------------------------------------------------- predictions

    def observe(self, event: PredictionEvent) -> list[Event]:
        """Window one prediction; the `rollback.requested` it calls for, if any."""
        key, at = event.model_key, event.occurred_at
        staged = event.payload.stage != "champion"
        live = self.staged.get(key) if staged else self.keys.get(key)
        if live is None:
            self.ignored[(key, "other_version" if staged else "no_live_version")] += 1
            return []
        if event.payload.version != live.version:
            self.ignored[(key, "other_version")] += 1
            return []
        newest = max(at, live.window.newest or at)
        cutoff = max(newest - self.config.window, live.since)
        if at < cutoff:
            self.ignored[(key, "stale")] += 1
            return []
        live.window.add(at, event.payload.confidence)
        live.window.drop_before(cutoff)
        return self._decide(key, live, at)

    def check(self, live: Live) -> Check | None:
        """The window's numbers and the signals that fire (none below `min_predictions`)."""
        mean, n = live.window.mean, len(live.window)
        if mean is None:
            return None
        signals: list[Signal] = []
        band = None
        ref = live.reference
        if n >= self.config.min_predictions and ref is not None:
            if ref.confidence is not None and mean < ref.confidence * (
                1 - self.config.confidence_drop
            ):
                signals.append("confidence")
            if ref.accuracy is not None and ref.accuracy - mean > self.config.estimate_drop:
                # Only then the band (it costs resamples of the whole window).
                config = self.config
                band = bootstrap_band(
                    live.window.values(), config.estimate_band, config.bootstrap_samples
                )
                if ref.accuracy > band[1]:
                    signals.append("estimate")
        return Check(mean=mean, n=n, reference=ref, signals=tuple(signals), band=band)

    def _decide(self, key: ModelKey, live: Live, at: datetime) -> list[Event]:
        check = self.check(live)
        if check is None:
            return []
        if live.stage == "champion":  # the metrics show the live version's numbers
            self.last_checks[key] = check
        if check.n >= self.config.min_predictions and live.reference is None:
            self.held[(key, "no_reference")] += 1
            return []
        if not check.signals or live.requested:
            return []
        if live.restored and at - live.since < self.config.cooldown:
            self.held[(key, "cooldown")] += 1
            return []
        live.requested = True
        payload = RollbackRequested(
            reason=self.reason(live, check), requested_by=SERVICE, from_version=live.version
        )
        request = live.cause.follow_up(
            RollbackRequestedEvent, producer=SERVICE, payload=payload, part=f"v{live.version}"
        )
        if request.event_id in self._requested_ids:
            return []  # made before a restart: it is in Kafka already
        self._requested_ids.add(request.event_id)
        for signal in check.signals:
            self.requested[(key, signal)] += 1
        log.warning(
            "%s: rollback of %s v%d requested: %s", key, live.stage, live.version, payload.reason
        )
        return [request]

    def reason(self, live: Live, check: Check) -> str:
        ref = check.reference
        assert ref is not None  # no signal without one
        parts = []
        if "confidence" in check.signals and ref.confidence is not None:
            drop, limit = 1 - check.mean / ref.confidence, self.config.confidence_drop
            parts.append(
                f"confidence: window mean {check.mean:.3f} is {drop:.1%} below the reference "
                f"{ref.confidence:.3f} (limit {limit:.0%})"
            )
        if "estimate" in check.signals and ref.accuracy is not None:
            drop, limit = ref.accuracy - check.mean, self.config.estimate_drop
            band = f", band {check.band[0]:.3f}–{check.band[1]:.3f}" if check.band else ""
            parts.append(
                f"estimate: expected accuracy {check.mean:.3f}{band} is {drop:.3f} below the "
                f"promotion's {ref.accuracy:.3f} (limit {limit:.2f})"
            )
        window = f"{self.config.window_minutes:g} min"
        who = f"v{live.version}" if live.stage == "champion" else f"{live.stage} v{live.version}"
        return f"{who}, {check.n} predictions in {window}: " + "; ".join(parts)
