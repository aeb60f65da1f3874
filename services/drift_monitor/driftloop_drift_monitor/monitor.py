"""Per model key: a baseline, a sliding window, a detector, and the decisions they make.

Pure with respect to Kafka: `observe` takes embedded interactions and returns the events
to publish (`drift.detected` + `training.requested`, or `training.requested` for a new
intent). Time is the interactions' own `completed_at`, so replaying the same events
after a restart reaches the same decisions.

What a key's rows go through, in order, before anything about the key changes:

    baseline   asked of the source once; a source that raises (MLflow answers 503) leaves
               the key *unavailable*: `observe_key` raises `BaselineUnavailable` and
               changes nothing, and the source is asked again after a backoff (1 s,
               doubling, capped). Only a source that answers "no baseline" (None) lets the
               key bootstrap one from its first `bootstrap_rows` rows.
    rows       skipped and counted, never raised on: another encoder, another dimension,
               a non-finite value, a `completed_at` before 1970 or more than `max_ahead`
               past the clock (a year-9999 row would end every window at once), and an
               event id already in the window (the collector re-emits a conversation with
               the same id after a restart: it is counted once).
    window     the one update that mutates the window, on checked rows only.
    decisions  new intents and the drift check, computed first and recorded together.
               If they raise, the rows stay in the window with their decisions due: the
               same rows again (the loop retries a failed flush with the same buffer) add
               nothing twice and make those decisions, so the end state is that of one
               successful call.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from driftloop_common.contracts.errors import DriftloopError, RetryableError
from driftloop_common.contracts.events import (
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
from driftloop_common.ml.drift.baseline import DriftBaseline, build_baseline
from driftloop_common.ml.drift.detect import (
    DEFAULT_DETECTORS,
    DetectorConfig,
    DriftDetector,
    DriftReport,
    require_known,
)
from driftloop_common.ml.drift.window import SlidingWindow

log = logging.getLogger(__name__)
SERVICE = "drift-monitor"
_IDS = uuid.UUID("6f1d3c2e-8a41-4c5b-9d0e-2b7f4a9c1e55")  # namespace for decision ids
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
"""Rows stamped before this are skipped: no interaction is that old, and the window's
buckets (and their seeded samples) are numbered from it."""

SKIP_REASONS = ("encoder", "dimension", "nonfinite", "time", "duplicate")
"""Why a row is left out of a window (`DriftMonitor.skipped`, a metric label)."""

BaselineState = Literal["loaded", "bootstrapping", "unavailable"]
BASELINE_STATES: tuple[BaselineState, ...] = ("loaded", "bootstrapping", "unavailable")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MonitorConfig(BaseModel):
    """How the monitor windows, checks and bootstraps. The drift-monitor's settings carry it
    (one `DRIFTLOOP_…` variable per field: `DRIFTLOOP_WINDOW_HOURS`, `DRIFTLOOP_ALPHA`, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_hours: float = Field(default=24.0, gt=0)
    check_every_rows: int = Field(default=500, gt=0)
    cooldown_hours: float = Field(default=6.0, ge=0)
    new_intent_min_examples: int = Field(default=50, gt=0)
    bootstrap_rows: int = Field(default=5000, gt=0)
    # The detector: false alarms per check (for the whole check), which statistics decide,
    # and the rows a window needs (labelled ones for label drift).
    alpha: float = Field(default=0.01, gt=0, lt=1)
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    min_rows: int = Field(default=500, gt=0)
    min_labelled: int = Field(default=200, gt=0)
    # The projection of a bootstrapped baseline.
    bins: int = Field(default=10, ge=2)
    pca_variance: float = Field(default=0.95, gt=0, le=1)
    max_components: int = Field(default=128, gt=0)
    raw_dimensions: bool = False
    # Rows stamped more than this ahead of the clock are skipped (counted), never windowed.
    max_ahead_hours: float = Field(default=24.0, gt=0)
    # Event ids remembered per key to count a re-emitted interaction once (they leave with
    # the window; past this many the oldest hours go first). About 130 bytes each.
    dedup_max_ids: int = Field(default=1_000_000, gt=0)
    # A failed baseline load (MLflow down) is retried after 1 s, doubling up to the cap.
    baseline_retry_initial_s: float = Field(default=1.0, gt=0)
    baseline_retry_max_s: float = Field(default=60.0, gt=0)

    @field_validator("detectors")
    @classmethod
    def _known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        require_known(names)  # a misspelled statistic stops the service at start-up
        return names

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.window_hours)

    @property
    def cooldown(self) -> timedelta:
        return timedelta(hours=self.cooldown_hours)

    @property
    def max_ahead(self) -> timedelta:
        return timedelta(hours=self.max_ahead_hours)

    @property
    def detector(self) -> DetectorConfig:
        return DetectorConfig(
            alpha=self.alpha,
            detectors=self.detectors,
            min_rows=self.min_rows,
            min_labelled=self.min_labelled,
        )

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

    def retry_delay(self, failures: int) -> timedelta:
        """The wait before the next baseline load after `failures` failed ones in a row."""
        initial = timedelta(seconds=self.baseline_retry_initial_s)
        return min(
            initial * 2 ** min(failures - 1, 30), timedelta(seconds=self.baseline_retry_max_s)
        )


class BaselineSource:
    """Where a model key's baseline comes from; the service plugs in MLflow and the store.

    `load` returns None when there is no baseline for the key (no champion, too little
    stored traffic): the key then bootstraps one from the stream. It raises (a
    `RetryableError` for a server that is down) when it cannot tell: the key waits."""

    def load(self, key: ModelKey) -> DriftBaseline | None:  # pragma: no cover - interface
        return None


class BaselineUnavailable(RetryableError):
    """The key's baseline source failed; the key's rows must wait (nothing was changed)."""

    def __init__(self, key: ModelKey, status: BaselineStatus) -> None:
        super().__init__(
            f"baseline of {key} unavailable after {status.failures} failed loads "
            f"(next attempt {status.retry_at.isoformat() if status.retry_at else 'now'}): "
            f"{status.error}"
        )
        self.key = key
        self.status = status


@dataclass(frozen=True)
class BaselineStatus:
    """Where a key's baseline stands: loaded, bootstrapping (the sources have none), or
    unavailable (the last load raised; `retry_at` is the next attempt)."""

    state: BaselineState
    failures: int = 0  # failed loads in a row
    retry_at: datetime | None = None
    error: str | None = None


class _SeenIds:
    """Event ids of the rows in one window, by the window's hourly bucket: they leave with
    their bucket, and at most `cap` are kept (the oldest buckets go first)."""

    def __init__(self, bucket: timedelta, cap: int) -> None:
        self._bucket_s = bucket.total_seconds()
        self._cap = cap
        self._ids: set[int] = set()  # `UUID.int`: hashed in C, and no UUID object kept
        self._buckets: dict[int, list[int]] = {}

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def _index(self, when: datetime) -> int:
        return math.floor(when.timestamp() / self._bucket_s)  # as `SlidingWindow` numbers them

    def add(self, ids: Sequence[int], times: Sequence[datetime]) -> None:
        first, last = self._index(min(times)), self._index(max(times))
        if first == last:  # the usual batch, within one hour: no per-row times
            self._buckets.setdefault(first, []).extend(ids)
        else:
            for event_id, when in zip(ids, times, strict=True):
                self._buckets.setdefault(self._index(when), []).append(event_id)
        self._ids.update(ids)

    def expire(self, start: datetime) -> None:
        """Forget the buckets before the one holding `start` (the window's start), then the
        oldest ones while more than `cap` ids are kept."""
        first = self._index(start)
        for index in sorted(self._buckets):
            if index >= first and len(self._ids) <= self._cap:
                break
            self._ids.difference_update(self._buckets.pop(index))


@dataclass
class _Bootstrap:
    """Rows buffered until a baseline can be built from the oldest traffic of the key."""

    encoder: EncoderInfo
    rows: list[np.ndarray] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)  # `UUID.int` of the event ids


@dataclass
class KeyState:
    baseline: DriftBaseline
    window: SlidingWindow
    detector: DriftDetector
    seen: _SeenIds
    rows_since_check: int = 0
    last_request_at: datetime | None = None
    new_intents_requested: set[str] = field(default_factory=set)
    last_report: DriftReport | None = None
    decisions_due_at: datetime | None = None  # rows were added; their decisions not yet made
    due_ids: frozenset[int] = frozenset()  # those rows (a retry is no re-emission)
    skipped_encoder: int = 0
    skipped_dimension: int = 0
    skipped_time: int = 0
    skipped_nonfinite: int = 0
    duplicates: int = 0


@dataclass
class _Admitted:
    """Rows that passed every check, as one matrix, and why the others were left out."""

    events: list[InteractionEmbeddedEvent]
    x: np.ndarray
    skipped: Counter[str]
    ids: frozenset[int]  # `UUID.int` of the rows kept (before the finite check)


class DriftMonitor:
    def __init__(
        self,
        config: MonitorConfig,
        source: BaselineSource | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.source = source or BaselineSource()
        self.clock = clock  # wall time: backoff of baseline loads, rows stamped in the future
        self.keys: dict[ModelKey, KeyState] = {}
        self.baselines: dict[ModelKey, BaselineStatus] = {}
        self.skipped: Counter[tuple[ModelKey, str]] = Counter()  # (key, reason): since start
        self.load_failures: Counter[ModelKey] = Counter()  # since start
        self._bootstrap: dict[ModelKey, _Bootstrap] = {}
        self._history: dict[ModelKey, list[tuple[datetime, str | None]]] = {}

    # ------------------------------------------------------------ baselines
    def _state(self, key: ModelKey) -> KeyState | None:
        """The key's state; None while it bootstraps. Raises `BaselineUnavailable` while
        its source fails (and until the backoff after a failure has passed)."""
        if (state := self.keys.get(key)) is not None:
            return state
        status = self.baselines.get(key)
        if status is not None and status.state == "bootstrapping":
            return None
        now = self.clock()
        if status is not None and status.retry_at is not None and now < status.retry_at:
            raise BaselineUnavailable(key, status)
        try:
            baseline = self.source.load(key)
        except DriftloopError as exc:
            # The sources translate their libraries' errors (an outage: retryable; a
            # champion whose baseline cannot be read: permanent). Either way the key waits
            # rather than bootstrap while a champion may exist; shown on /readyz, /metrics.
            failures = (status.failures if status else 0) + 1
            delay = self.config.retry_delay(failures)
            status = BaselineStatus(
                "unavailable", failures, now + delay, f"{type(exc).__name__}: {exc}"
            )
            self.baselines[key] = status
            self.load_failures[key] += 1
            log.warning(
                "baseline of %s unavailable (failure %d); its rows wait, next load in %.0f s: %s",
                key,
                failures,
                delay.total_seconds(),
                status.error,
                exc_info=not isinstance(exc, RetryableError),
            )
            raise BaselineUnavailable(key, status) from exc
        if baseline is None:
            self.baselines[key] = BaselineStatus("bootstrapping")
            return None
        self.install(key, baseline)
        return self.keys[key]

    def install(self, key: ModelKey, baseline: DriftBaseline) -> None:
        """Use `baseline` for `key` from now on; the window starts afresh against it."""
        previous = self.keys.get(key)
        self.keys[key] = KeyState(
            baseline=baseline,
            window=(window := SlidingWindow(baseline, length=self.config.window)),
            detector=DriftDetector(baseline, self.config.detector),
            seen=_SeenIds(window.bucket, self.config.dedup_max_ids),
            last_request_at=previous.last_request_at if previous else None,
            new_intents_requested=previous.new_intents_requested if previous else set(),
        )
        self.baselines[key] = BaselineStatus("loaded")
        self._bootstrap.pop(key, None)
        log.info("baseline for %s: %s (%d components)", key, baseline.source, baseline.projection.k)

    def reset_windows(self) -> None:
        """Empty every window (they are about to be rebuilt by replaying Kafka)."""
        for state in self.keys.values():
            state.window = SlidingWindow(state.baseline, length=self.config.window)
            state.seen = _SeenIds(state.window.bucket, self.config.dedup_max_ids)
            state.rows_since_check = 0
            state.decisions_due_at = None
            state.due_ids = frozenset()
        self._bootstrap.clear()

    def reload(self, key: ModelKey) -> None:
        """A new champion (promotion or rollback): fetch its baseline on the next event."""
        self.baselines.pop(key, None)
        self.keys.pop(key, None)

    def unavailable(self) -> dict[ModelKey, BaselineStatus]:
        """Keys whose baseline source fails now (their rows wait)."""
        return {k: s for k, s in self.baselines.items() if s.state == "unavailable"}

    def remember_request(self, key: ModelKey, at: datetime, new_label: str | None) -> None:
        """Restore cooldowns and requested intents from earlier `training.requested` events."""
        self._history.setdefault(key, []).append((at, new_label))

    # ------------------------------------------------------------ rows
    def _admit(
        self,
        events: Sequence[InteractionEmbeddedEvent],
        encoder: EncoderInfo | None,
        dim: int | None,
        seen: _SeenIds | set[int],
        retried: frozenset[int] = frozenset(),
    ) -> _Admitted:
        """Check every row, changing nothing; `encoder`/`dim` None: the first row's. Rows
        in `seen` are duplicates, except those of a call being retried (`retried`)."""
        latest = self.clock() + self.config.max_ahead
        skipped: Counter[str] = Counter()
        kept: list[InteractionEmbeddedEvent] = []
        ids: set[int] = set()
        for event in events:
            p = event.payload
            if encoder is None:
                encoder = p.encoder
            if dim is None:
                dim = len(p.embedding)
            if p.encoder != encoder:
                skipped["encoder"] += 1  # never mix fp32 and int8 (or other encoders)
            elif len(p.embedding) != dim:
                skipped["dimension"] += 1  # a broken producer must not stop the key
            elif not EARLIEST <= p.completed_at <= latest:
                skipped["time"] += 1
            elif (event_id := event.event_id.int) in seen or event_id in ids:
                if event_id not in retried:
                    skipped["duplicate"] += 1  # a re-emission (same event id) counts once
            else:
                ids.add(event_id)
                kept.append(event)
        x = np.array([e.payload.embedding for e in kept], dtype=np.float32)
        if kept and not (finite := np.isfinite(x).all(axis=1)).all():
            skipped["nonfinite"] += int((~finite).sum())
            kept = [e for e, ok in zip(kept, finite, strict=True) if ok]
            x = x[finite]
        return _Admitted(kept, x, skipped, frozenset(ids))

    def _bootstrap_from_stream(
        self, key: ModelKey, events: Sequence[InteractionEmbeddedEvent]
    ) -> tuple[KeyState | None, Sequence[InteractionEmbeddedEvent]]:
        """No champion and no store: the key's first `bootstrap_rows` rows become its
        baseline. Returns the new state (or None) and the rows after those it used."""
        pending = self._bootstrap.get(key)
        admitted = self._admit(
            events,
            pending.encoder if pending else None,
            pending.rows[0].shape[0] if pending and pending.rows else None,
            pending.ids if pending else set(),
        )
        if not admitted.events:
            self._count(key, admitted.skipped)
            return None, []
        held = len(pending.rows) if pending else 0
        need = self.config.bootstrap_rows - held
        used = admitted.events[:need]
        if held + len(used) < self.config.bootstrap_rows:
            if pending is None:
                pending = self._bootstrap[key] = _Bootstrap(encoder=used[0].payload.encoder)
            pending.rows.extend(admitted.x)
            pending.labels.extend(e.payload.label for e in used)
            pending.times.extend(e.payload.completed_at for e in used)
            pending.ids.update(e.event_id.int for e in used)
            self._count(key, admitted.skipped)
            return None, []
        earlier = pending or _Bootstrap(encoder=used[0].payload.encoder)
        rows = (
            np.concatenate([np.stack(earlier.rows), admitted.x[:need]])
            if held
            else admitted.x[:need]
        )
        baseline = self.config.build_baseline(
            rows,
            [*earlier.labels, *(e.payload.label for e in used)],
            earlier.encoder,
            f"bootstrap: first {rows.shape[0]} interactions of {key}",
        )
        log.warning(
            "no champion baseline for %s: bootstrapped one from its first %d rows",
            key,
            rows.shape[0],
        )
        self.install(key, baseline)
        state = self.keys[key]
        # Rows used to build the baseline are not scored against it (nor are re-emissions
        # of them); the rows after them are.
        state.seen.add(
            [*earlier.ids, *(e.event_id.int for e in used)],
            [*earlier.times, *(e.payload.completed_at for e in used)],
        )
        self._count(key, admitted.skipped)
        last = next(i for i, e in enumerate(events) if e is used[-1])
        return state, events[last + 1 :]

    def _count(self, key: ModelKey, skipped: Counter[str], state: KeyState | None = None) -> None:
        for reason, n in skipped.items():
            self.skipped[(key, reason)] += n
        if state is not None:
            state.skipped_encoder += skipped["encoder"]
            state.skipped_dimension += skipped["dimension"]
            state.skipped_time += skipped["time"]
            state.skipped_nonfinite += skipped["nonfinite"]
            state.duplicates += skipped["duplicate"]

    # ------------------------------------------------------------ events
    def observe(self, events: Sequence[InteractionEmbeddedEvent]) -> list[Event]:
        """Add embedded interactions to their windows; return any decisions to publish.

        Key by key (`observe_key`): if one key raises, the keys before it were observed
        and their decisions are lost to the caller, so a caller that retries calls
        `observe_key` per key (as the service does)."""
        by_key: dict[ModelKey, list[InteractionEmbeddedEvent]] = {}
        for event in events:
            by_key.setdefault(event.model_key, []).append(event)
        outputs: list[Event] = []
        for key, group in by_key.items():
            outputs += self.observe_key(key, group)
        return outputs

    def observe_key(self, key: ModelKey, events: Sequence[InteractionEmbeddedEvent]) -> list[Event]:
        """`observe` for the rows of one key: atomic for the key (see the module docstring).

        Raises `BaselineUnavailable` (changing nothing) while the key's baseline source fails."""
        state = self._state(key)
        if state is None:
            state, events = self._bootstrap_from_stream(key, events)
            if state is None:
                return []
        admitted = self._admit(
            events,
            state.baseline.encoder,
            state.baseline.projection.mean.shape[0],
            state.seen,
            state.due_ids,
        )
        fresh = admitted.events
        if fresh:
            times = [e.payload.completed_at for e in fresh]
            state.window.add(admitted.x, times, [e.payload.label for e in fresh])
            state.seen.add([e.event_id.int for e in fresh], times)
            assert state.window.latest is not None
            state.seen.expire(state.window.latest - state.window.length)
            state.rows_since_check += len(fresh)
            state.decisions_due_at = fresh[-1].payload.completed_at
            state.due_ids = admitted.ids
        self._count(key, admitted.skipped, state)
        if state.decisions_due_at is None:
            return []
        return self._decide(key, state, state.decisions_due_at)

    def _decide(self, key: ModelKey, state: KeyState, last: datetime) -> list[Event]:
        """New intents and, every `check_every_rows` rows, the drift check: computed first,
        recorded in the state only when every step succeeded."""
        self._apply_history(key, state)
        outputs, requested = self._new_intents(key, state, last)
        report, request_at = None, None
        due = state.rows_since_check >= self.config.check_every_rows
        if due:
            report, drift, request_at = self._check(key, state)
            outputs += drift
        state.new_intents_requested |= requested
        if due:
            state.rows_since_check = 0
            state.last_report = report
            if request_at is not None:
                state.last_request_at = request_at
        state.decisions_due_at = None
        state.due_ids = frozenset()
        return outputs

    def _apply_history(self, key: ModelKey, state: KeyState) -> None:
        for at, new_label in self._history.pop(key, []):
            if new_label:
                state.new_intents_requested.add(new_label)
            elif state.last_request_at is None or at > state.last_request_at:
                state.last_request_at = at

    def _check(
        self, key: ModelKey, state: KeyState
    ) -> tuple[DriftReport, list[Event], datetime | None]:
        """The report, the events to publish and the new `last_request_at` (None: none)."""
        snapshot = state.window.snapshot()
        report = state.detector.check(snapshot)
        if not report.drifted:
            return report, [], None
        if state.last_request_at and snapshot.end - state.last_request_at < self.config.cooldown:
            log.info(
                "drift on %s inside the cooldown (last request %s): not requesting again",
                key,
                state.last_request_at.isoformat(),
            )
            return report, [], None
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
        return report, [detected, request], snapshot.end

    def _new_intents(
        self, key: ModelKey, state: KeyState, last: datetime
    ) -> tuple[list[Event], set[str]]:
        """Requests for labels the champion does not know, and those labels."""
        known = state.baseline.label_set
        if not known:
            return [], set()
        counts: Counter[str] = state.window.label_counts()
        outputs: list[Event] = []
        requested: set[str] = set()
        for label, count in sorted(counts.items()):
            if label in known or label in state.new_intents_requested:
                continue
            if count >= self.config.new_intent_min_examples:
                requested.add(label)
                request_id = uuid.uuid5(_IDS, f"{key}:{state.baseline.fingerprint}:new:{label}")
                outputs.append(
                    TrainingRequestedEvent(
                        event_id=request_id,
                        correlation_id=request_id,
                        producer=SERVICE,
                        model_key=key,
                        occurred_at=last,
                        payload=TrainingRequested(
                            reason=TrainingReason.NEW_INTENT,
                            requested_by=SERVICE,
                            new_label=label,
                            as_of=last,
                            note=f"{count} labelled examples of '{label}', unknown to the champion",
                        ),
                    )
                )
                log.warning("new intent %r on %s: %d examples", label, key, count)
        return outputs, requested
