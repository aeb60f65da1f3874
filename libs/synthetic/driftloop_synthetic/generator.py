"""The interaction stream: who writes what, when, in which language, with drift on a schedule.

A `GeneratorConfig` fixes the base traffic mix; each `DriftSpec` changes part of it from
its `at` time onward (later specs build on earlier ones). `generate` draws every choice
from one seeded numpy Generator, so a config always yields the same stream.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from driftloop_synthetic import en_us, es_es
from driftloop_synthetic.lexicon import Lexicon, compose

LEXICONS: Mapping[str, Lexicon] = {"en-us": en_us.LEXICON, "es-es": es_es.LEXICON}
LANGUAGES: tuple[str, ...] = tuple(LEXICONS)

QUEUE_OF_INTENT: Mapping[str, str] = {
    "billing": "Billing",
    "refund": "Billing",
    "payment_failed": "Billing",
    "update_payment_method": "Billing",
    "check_balance": "Billing",
    "subscription_upgrade": "Billing",
    "cancel_subscription": "Billing",
    "cancel_order": "Orders",
    "delivery_status": "Orders",
    "change_address": "Orders",
    "card_lost": "Cards",
    "report_fraud": "Cards",
    "password_reset": "Tech Support",
    "account_locked": "Tech Support",
    "speak_to_agent": "General",
    "complaint": "General",
    "crypto_wallet": "Billing",
    "refund_status_new_product": "Orders",
    "out_of_scope": "General",
}
QUEUES: tuple[str, ...] = tuple(dict.fromkeys(QUEUE_OF_INTENT.values()))

DEFAULT_INTENT_WEIGHTS: Mapping[str, float] = {
    "delivery_status": 0.14,
    "billing": 0.10,
    "refund": 0.09,
    "password_reset": 0.08,
    "cancel_order": 0.07,
    "speak_to_agent": 0.07,
    "payment_failed": 0.06,
    "account_locked": 0.05,
    "card_lost": 0.05,
    "change_address": 0.05,
    "update_payment_method": 0.05,
    "check_balance": 0.05,
    "complaint": 0.04,
    "cancel_subscription": 0.04,
    "subscription_upgrade": 0.03,
    "report_fraud": 0.03,
}
"""The everyday mix (sums to 1, so a weight reads as a share)."""

INTENTS: tuple[str, ...] = tuple(DEFAULT_INTENT_WEIGHTS)
EMERGING_INTENTS: tuple[str, ...] = ("crypto_wallet", "refund_status_new_product")
"""Intents with templates but no traffic until a `DriftSpec` gives them a weight."""
OUT_OF_SCOPE = "out_of_scope"
"""The label of off-topic utterances (their share is `off_topic_share`)."""

MEDIA_TYPES: Mapping[str, float] = {"voice": 0.45, "chat": 0.25, "message": 0.2, "email": 0.1}

# Contacts per hour of day (UTC) and per weekday, relative to the busiest.
_HOURLY = np.array([1, 1, 1, 1, 1, 2, 4, 7, 9, 10, 10, 10, 9, 9, 10, 10, 9, 8, 6, 5, 4, 3, 2, 1])
_WEEKDAY = np.array([1.0, 1.0, 0.95, 0.95, 0.9, 0.5, 0.35])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Interaction:
    """One finished customer contact, labelled with the intent it was written for."""

    conversation_id: str
    text: str
    language: str
    intent: str
    completed_at: datetime
    queue: str
    media_type: str


@dataclass(frozen=True)
class DriftSpec:
    """From `at` onward, change part of the traffic; fields left `None` keep their value.

    - `intent_weights` is merged into the current weights: raise or lower intents, set
      one to 0 to make it vanish, or name an emerging intent (`crypto_wallet`) to make
      it appear;
    - `product` + `product_share` launch a product: that share of in-scope utterances names it,
      with launch phrasing ("the {product} I pre-ordered");
    - `spanish_share` and `off_topic_share` change the language mix and the share of
      out-of-scope utterances.
    """

    at: datetime
    intent_weights: Mapping[str, float] | None = None
    product: str | None = None
    product_share: float | None = None
    spanish_share: float | None = None
    off_topic_share: float | None = None

    def __post_init__(self) -> None:
        _require_aware("at", self.at)
        if self.intent_weights is not None:
            _check_weights(self.intent_weights)
        for name in ("product_share", "spanish_share", "off_topic_share"):
            _check_share(name, getattr(self, name))
        if self.product is not None and not self.product.strip():
            raise ValueError("product must not be blank")


def _default_start() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def _default_end() -> datetime:
    return _default_start() + timedelta(days=180)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate: `count` interactions between `start` and `end`, and the drift."""

    seed: int = 0
    count: int = 10_000
    start: datetime = field(default_factory=_default_start)
    end: datetime = field(default_factory=_default_end)
    intent_weights: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_INTENT_WEIGHTS)
    )
    spanish_share: float = 0.3
    off_topic_share: float = 0.02
    typo_rate: float = 0.1
    """Chance that a chat or message utterance carries one typo."""
    drift: tuple[DriftSpec, ...] = ()

    def __post_init__(self) -> None:
        _require_aware("start", self.start)
        _require_aware("end", self.end)
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.count < 0:
            raise ValueError("count must be >= 0")
        _check_weights(self.intent_weights)
        for name in ("spanish_share", "off_topic_share", "typo_rate"):
            _check_share(name, getattr(self, name))
        object.__setattr__(self, "drift", tuple(sorted(self.drift, key=lambda d: d.at)))
        for mix in self.mixes():
            if mix.product_share > 0 and mix.product is None:
                raise ValueError(f"product_share set from {mix.since} but no product launched")
            if not any(w > 0 for w in mix.intent_weights.values()) and mix.off_topic_share < 1:
                raise ValueError(f"every intent weight is 0 from {mix.since}")

    def mixes(self) -> list[TrafficMix]:
        """The traffic mix in force before the first drift, then after each one."""
        mix = TrafficMix(
            since=self.start,
            intent_weights=dict(self.intent_weights),
            spanish_share=self.spanish_share,
            off_topic_share=self.off_topic_share,
        )
        mixes = [mix]
        for spec in self.drift:
            mix = mix.apply(spec)
            mixes.append(mix)
        return mixes


@dataclass(frozen=True)
class TrafficMix:
    """The traffic in force from `since` until the next drift."""

    since: datetime
    intent_weights: Mapping[str, float]
    spanish_share: float
    off_topic_share: float
    product: str | None = None
    product_share: float = 0.0

    def apply(self, spec: DriftSpec) -> TrafficMix:
        changes: dict[str, object] = {"since": spec.at}
        if spec.intent_weights is not None:
            changes["intent_weights"] = {**self.intent_weights, **spec.intent_weights}
        for name in ("product", "product_share", "spanish_share", "off_topic_share"):
            if (value := getattr(spec, name)) is not None:
                changes[name] = value
        return replace(self, **changes)


def generate(config: GeneratorConfig) -> Iterator[Interaction]:
    """Yield `config.count` interactions in `completed_at` order."""
    rng = np.random.default_rng(config.seed)
    times_ms = _sample_times(rng, config)
    mixes = config.mixes()
    starts_ms = np.array([epoch_ms(m.since) for m in mixes[1:]], dtype=np.int64)
    which = np.searchsorted(starts_ms, times_ms, side="right")
    media, media_cdf = list(MEDIA_TYPES), _cdf(list(MEDIA_TYPES.values()))
    intent_tables = [_intent_table(m) for m in mixes]
    for t_ms, i in zip(times_ms.tolist(), which.tolist(), strict=True):
        mix = mixes[i]
        names, cdf = intent_tables[i]
        language = "es-es" if rng.random() < mix.spanish_share else "en-us"
        intent = OUT_OF_SCOPE if rng.random() < mix.off_topic_share else names[_draw(rng, cdf)]
        media_type = media[_draw(rng, media_cdf)]
        mention = (
            mix.product is not None and intent != OUT_OF_SCOPE and rng.random() < mix.product_share
        )
        text = compose(
            LEXICONS[language],
            intent,
            rng,
            media_type=media_type,
            launch=mix.product,
            mention_launch=mention,
            typo_rate=config.typo_rate,
        )
        yield Interaction(
            conversation_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            text=text,
            language=language,
            intent=intent,
            completed_at=_EPOCH + timedelta(milliseconds=t_ms),
            queue=QUEUE_OF_INTENT[intent],
            media_type=media_type,
        )


def _sample_times(rng: np.random.Generator, config: GeneratorConfig) -> np.ndarray:
    """`count` sorted epoch-ms times, busier on weekday office hours (rejection sampling)."""
    lo, hi = epoch_ms(config.start), epoch_ms(config.end)
    accepted: list[np.ndarray] = []
    needed = config.count
    while needed > 0:
        candidates = rng.integers(lo, hi, size=2 * needed + 16)
        hours = (candidates // 3_600_000) % 24
        weekdays = (candidates // 86_400_000 + 3) % 7  # 1970-01-01 was a Thursday
        keep = rng.random(candidates.size) < _HOURLY[hours] / 10 * _WEEKDAY[weekdays]
        chosen = candidates[keep][:needed]
        accepted.append(chosen)
        needed -= chosen.size
    return np.sort(np.concatenate(accepted)) if accepted else np.empty(0, dtype=np.int64)


def _intent_table(mix: TrafficMix) -> tuple[list[str], list[float]]:
    names = [name for name, w in mix.intent_weights.items() if w > 0]
    return names, _cdf([mix.intent_weights[n] for n in names])


def _cdf(weights: list[float]) -> list[float]:
    cumulative = np.cumsum(weights, dtype=float)
    return (cumulative / cumulative[-1]).tolist() if len(weights) else []


def _draw(rng: np.random.Generator, cdf: list[float]) -> int:
    # Inverse CDF on one uniform draw: much faster than rng.choice for a single pick.
    return min(bisect.bisect_right(cdf, rng.random()), len(cdf) - 1)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (no float rounding)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _check_share(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


def _check_weights(weights: Mapping[str, float]) -> None:
    known = set(INTENTS) | set(EMERGING_INTENTS)
    if unknown := sorted(set(weights) - known):
        raise ValueError(f"unknown intent(s) {unknown}; known: {', '.join(sorted(known))}")
    if negative := sorted(name for name, w in weights.items() if w < 0):
        raise ValueError(f"intent weights must be >= 0: {negative}")
