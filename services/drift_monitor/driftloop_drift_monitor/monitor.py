"""Per model key: a baseline, a sliding window, a detector, and the decisions they make.

Pure with respect to Kafka: `observe` takes embedded interactions and returns the events
to publish (`drift.detected` + `training.requested`, or `training.requested` for a new
intent). Time is the interactions' own `completed_at`, so replaying the same events
after a restart reaches the same decisions.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from driftloop_common.drift.baseline import DriftBaseline, build_baseline
from driftloop_common.drift.detect import DetectorConfig, DriftDetector, DriftReport
from driftloop_common.drift.window import SlidingWindow
from driftloop_common.events import (
    DriftDetected,
    DriftDetectedEvent,
    EncoderInfo,
    Event,
    InteractionEmbeddedEvent,
    ModelKey,
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
)

log = logging.getLogger(__name__)
SERVICE = "drift-monitor"
_IDS = uuid.UUID("6f1d3c2e-8a41-4c5b-9d0e-2b7f4a9c1e55")  # namespace for decision ids


@dataclass(frozen=True)
class MonitorConfig:
    window: timedelta = timedelta(hours=24)
    check_every_rows: int = 500
    cooldown: timedelta = timedelta(hours=6)
    new_intent_min_examples: int = 50
    bootstrap_rows: int = 5000
    bins: int = 10
    pca_variance: float = 0.95
    max_components: int = 128
    raw_dimensions: bool = False
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def build_baseline(
        self, x: np.ndarray, labels: list[str | None] | None, encoder: EncoderInfo, source: str
    ) -> DriftBaseline:
        """A bootstrap baseline with this configuration's binning and projection."""
        return build_baseline(
            x,
            encoder=encoder,
            labels=labels if labels and all(label is not None for label in labels) else None,
            bins=self.bins,
            variance=self.pca_variance,
            max_components=self.max_components,
            raw_dimensions=self.raw_dimensions,
            source=source,
        )


class BaselineSource:
    """Where a model key's baseline comes from; the service plugs in MLflow and the store."""

    def load(self, key: ModelKey) -> DriftBaseline | None:  # pragma: no cover - interface
        return None


@dataclass
class _Bootstrap:
    """Rows buffered until a baseline can be built from the oldest traffic of the key."""

    encoder: EncoderInfo
    rows: list[np.ndarray] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)


@dataclass
class KeyState:
    baseline: DriftBaseline
    window: SlidingWindow
    detector: DriftDetector
    rows_since_check: int = 0
    last_request_at: datetime | None = None
    new_intents_requested: set[str] = field(default_factory=set)
    last_report: DriftReport | None = None
    skipped_encoder: int = 0
    skipped_dimension: int = 0


class DriftMonitor:
    def __init__(self, config: MonitorConfig, source: BaselineSource | None = None) -> None:
        self.config = config
        self.source = source or BaselineSource()
        self.keys: dict[ModelKey, KeyState] = {}
        self._bootstrap: dict[ModelKey, _Bootstrap] = {}
        self._loaded: set[ModelKey] = set()
        self._history: dict[ModelKey, list[tuple[datetime, str | None]]] = {}

    # ------------------------------------------------------------ baselines
    def _state(self, key: ModelKey) -> KeyState | None:
        if key not in self._loaded:
            self._loaded.add(key)
            baseline = self.source.load(key)
            if baseline is not None:
                self.install(key, baseline)
        return self.keys.get(key)

    def install(self, key: ModelKey, baseline: DriftBaseline) -> None:
        """Use `baseline` for `key` from now on; the window starts afresh against it."""
        previous = self.keys.get(key)
        self.keys[key] = KeyState(
            baseline=baseline,
            window=SlidingWindow(baseline, length=self.config.window),
            detector=DriftDetector(baseline, self.config.detector),
            last_request_at=previous.last_request_at if previous else None,
            new_intents_requested=previous.new_intents_requested if previous else set(),
        )
        self._bootstrap.pop(key, None)
        log.info("baseline for %s: %s (%d components)", key, baseline.source, baseline.projection.k)

    def reset_windows(self) -> None:
        """Empty every window (they are about to be rebuilt by replaying Kafka)."""
        for state in self.keys.values():
            state.window = SlidingWindow(state.baseline, length=self.config.window)
            state.rows_since_check = 0
        self._bootstrap.clear()

    def reload(self, key: ModelKey) -> None:
        """A new champion (promotion or rollback): fetch its baseline on the next event."""
        self._loaded.discard(key)
        self.keys.pop(key, None)

    def remember_request(self, key: ModelKey, at: datetime, new_label: str | None) -> None:
        """Restore cooldowns and requested intents from earlier `training.requested` events."""
        self._history.setdefault(key, []).append((at, new_label))

    def _bootstrap_from_stream(
        self, key: ModelKey, event: InteractionEmbeddedEvent
    ) -> KeyState | None:
        """No champion and no store: the key's first `bootstrap_rows` rows become its baseline."""
        p = event.payload
        pending = self._bootstrap.setdefault(key, _Bootstrap(encoder=p.encoder))
        if p.encoder != pending.encoder or (
            pending.rows and len(p.embedding) != pending.rows[0].shape[0]
        ):
            return None
        pending.rows.append(np.asarray(p.embedding, dtype=np.float32))
        pending.labels.append(p.label)
        if len(pending.rows) < self.config.bootstrap_rows:
            return None
        baseline = self.config.build_baseline(
            np.stack(pending.rows),
            pending.labels,
            pending.encoder,
            f"bootstrap: first {len(pending.rows)} interactions of {key}",
        )
        log.warning(
            "no champion baseline for %s: bootstrapped one from its first %d rows",
            key,
            len(pending.rows),
        )
        self.install(key, baseline)
        return self.keys[key]

    # ------------------------------------------------------------ events
    def observe(self, events: list[InteractionEmbeddedEvent]) -> list[Event]:
        """Add embedded interactions to their windows; return any decisions to publish."""
        by_key: dict[ModelKey, list[InteractionEmbeddedEvent]] = {}
        for event in events:
            by_key.setdefault(event.model_key, []).append(event)
        outputs: list[Event] = []
        for key, group in by_key.items():
            state = self._state(key)
            fresh: list[InteractionEmbeddedEvent] = []
            for event in group:
                if state is None:
                    state = self._bootstrap_from_stream(key, event)
                    continue  # rows used to build the baseline are not scored against it
                if event.payload.encoder != state.baseline.encoder:
                    state.skipped_encoder += 1  # never mix fp32 and int8 (or other encoders)
                    continue
                if len(event.payload.embedding) != state.baseline.projection.mean.shape[0]:
                    state.skipped_dimension += 1  # a broken producer must not stop the key
                    continue
                fresh.append(event)
            if state is None or not fresh:
                continue
            self._apply_history(key, state)
            state.window.add(
                np.array([e.payload.embedding for e in fresh], dtype=np.float32),
                [e.payload.completed_at for e in fresh],
                [e.payload.label for e in fresh],
            )
            state.rows_since_check += len(fresh)
            outputs += self._new_intents(key, state, fresh[-1])
            if state.rows_since_check >= self.config.check_every_rows:
                state.rows_since_check = 0
                outputs += self._check(key, state)
        return outputs

    def _apply_history(self, key: ModelKey, state: KeyState) -> None:
        for at, new_label in self._history.pop(key, []):
            if new_label:
                state.new_intents_requested.add(new_label)
            elif state.last_request_at is None or at > state.last_request_at:
                state.last_request_at = at

    def _check(self, key: ModelKey, state: KeyState) -> list[Event]:
        snapshot = state.window.snapshot()
        report = state.detector.check(snapshot)
        state.last_report = report
        if not report.drifted:
            return []
        if state.last_request_at and snapshot.end - state.last_request_at < self.config.cooldown:
            log.info(
                "drift on %s inside the cooldown (last request %s): not requesting again",
                key,
                state.last_request_at.isoformat(),
            )
            return []
        state.last_request_at = snapshot.end
        drift = DriftDetected(
            window_start=snapshot.start,
            window_end=snapshot.end,
            window_size=snapshot.rows,
            scores=report.scores,
            psi_level=report.psi_level,
            baseline_version=state.baseline.source,
        )
        decision_id = uuid.uuid5(_IDS, f"{key}:{state.baseline.fingerprint}:{snapshot.end}")
        detected = DriftDetectedEvent(
            event_id=decision_id,
            correlation_id=decision_id,
            producer=SERVICE,
            model_key=key,
            occurred_at=snapshot.end,
            payload=drift,
        )
        request = detected.follow_up(
            TrainingRequestedEvent,
            producer=SERVICE,
            payload=TrainingRequested(
                reason=TrainingReason.DRIFT,
                requested_by=SERVICE,
                as_of=snapshot.end,
                drift=drift,
            ),
        )
        fired = ", ".join(
            f"{s.statistic}={s.value:.4f}>{s.null_quantile:.4f}" for s in report.scores if s.fired
        )
        log.warning("drift on %s over %d rows: %s", key, snapshot.rows, fired)
        return [detected, request]

    def _new_intents(
        self, key: ModelKey, state: KeyState, last: InteractionEmbeddedEvent
    ) -> list[Event]:
        known = state.baseline.label_set
        if not known:
            return []
        counts: Counter[str] = state.window.label_counts()
        outputs: list[Event] = []
        for label, count in sorted(counts.items()):
            if label in known or label in state.new_intents_requested:
                continue
            if count >= self.config.new_intent_min_examples:
                state.new_intents_requested.add(label)
                request_id = uuid.uuid5(_IDS, f"{key}:{state.baseline.fingerprint}:new:{label}")
                outputs.append(
                    TrainingRequestedEvent(
                        event_id=request_id,
                        correlation_id=request_id,
                        producer=SERVICE,
                        model_key=key,
                        occurred_at=last.payload.completed_at,
                        payload=TrainingRequested(
                            reason=TrainingReason.NEW_INTENT,
                            requested_by=SERVICE,
                            new_label=label,
                            as_of=last.payload.completed_at,
                            note=f"{count} labelled examples of '{label}', unknown to the champion",
                        ),
                    )
                )
                log.warning("new intent %r on %s: %d examples", label, key, count)
        return outputs
