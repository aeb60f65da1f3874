"""Synthetic sales leads with a known conversion probability and scheduled drift.

The lead-scoring table of the second design document, generated: one row per lead that
finished its web journey, with a noisy conversion probability as the regression target.

from datetime import UTC, datetime
from driftloop_synthetic.leads import LeadConfig, LeadDriftSpec, generate_leads

config = LeadConfig(
    seed=7,
    count=20_000,
    end=datetime(2026, 7, 1, tzinfo=UTC),
    drift=(
        # a new campaign source takes traffic from day 90 on (data drift) ...
        LeadDriftSpec(at=datetime(2026, 5, 2, tzinfo=UTC), campaign_weights={"webinar": 0.15}),
        # ... and referral leads convert much better from day 120 on (concept drift)
        LeadDriftSpec(at=datetime(2026, 6, 1, tzinfo=UTC), conversion_lift={"referral": 1.5}),
    ),
)
leads = generate_leads(config)  # a pandas DataFrame, oldest first

Ground truth (`conversion_logit`, on the complete features, before any value goes missing)::

    logit = -2.0
          + 2.4 · tanh((pages_visited − 3) / 5)                 engagement, saturating
          + 0.6 · tanh((time_on_site_s / pages_visited − 60) / 60)   attention per page
          − 0.35 · (log10(company_size) − 2.5)²                 mid-market sweet spot (~300)
          + 0.45 · min(prior_contacts, 3) − 0.3 · max(prior_contacts − 3, 0)   warm-up, fatigue
          + INDUSTRY_EFFECT[industry] + SOURCE_EFFECT[campaign_source]
          + lift[campaign_source]                               concept drift (0 by default)
    conversion_probability = sigmoid(logit + Normal(0, noise_sd))

`pages_visited` is the strongest driver by construction (it moves the logit by over 3
points across its range; every other term by about 1.5 at most).

Each column is drawn from its own random stream, in time order, so a drift that starts at
`at` leaves every row before `at` exactly as it was without the drift.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

INDUSTRY_EFFECT: Mapping[str, float] = {
    "software": 0.5,
    "finance": 0.3,
    "healthcare": 0.0,
    "retail": -0.3,
    "manufacturing": 0.1,
    "education": -0.5,
    "logistics": -0.1,
    "public_sector": -0.7,
}
"""Each industry's term in the conversion log-odds."""
INDUSTRIES: tuple[str, ...] = tuple(INDUSTRY_EFFECT)

SOURCE_EFFECT: Mapping[str, float] = {
    "email": 0.1,
    "paid_search": -0.2,
    "organic": 0.2,
    "referral": 0.9,
    "social": -0.6,
    "event": 0.6,
    "webinar": 0.4,
    "partner": 0.7,
}
"""Each campaign source's term in the conversion log-odds."""

DEFAULT_CAMPAIGN_WEIGHTS: Mapping[str, float] = {
    "email": 0.25,
    "paid_search": 0.22,
    "organic": 0.20,
    "social": 0.15,
    "event": 0.10,
    "referral": 0.08,
}
"""The everyday campaign mix (sums to 1, so a weight reads as a share)."""
CAMPAIGN_SOURCES: tuple[str, ...] = tuple(DEFAULT_CAMPAIGN_WEIGHTS)
EMERGING_SOURCES: tuple[str, ...] = ("webinar", "partner")
"""Campaign sources with no leads until a `LeadDriftSpec` gives them a weight."""

DEFAULT_INDUSTRY_WEIGHTS: Mapping[str, float] = {
    "software": 0.22,
    "finance": 0.14,
    "retail": 0.14,
    "healthcare": 0.13,
    "manufacturing": 0.12,
    "education": 0.09,
    "logistics": 0.08,
    "public_sector": 0.08,
}

NUMERIC_FEATURES: tuple[str, ...] = (
    "company_size",
    "pages_visited",
    "time_on_site_s",
    "prior_contacts",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("industry", "campaign_source")
TARGET = "conversion_probability"
MAY_BE_MISSING: tuple[str, ...] = ("company_size", "industry", "time_on_site_s")
"""Columns with missing values: size not enriched, industry unknown, tracking blocked."""
COLUMNS: tuple[str, ...] = (
    "lead_id",
    "language",
    "completed_at",
    "company_size",
    "industry",
    "pages_visited",
    "time_on_site_s",
    "campaign_source",
    "prior_contacts",
    TARGET,
)

_MEAN_PAGES: Mapping[str, float] = {
    "email": 3.5,
    "paid_search": 3.0,
    "organic": 5.0,
    "referral": 6.0,
    "social": 2.0,
    "event": 4.0,
    "webinar": 5.0,
    "partner": 4.5,
}
"""Mean pages beyond the landing page, per source (before `engagement_scale`)."""
_WARM_SOURCES = ("email", "event", "partner")
"""Sources whose leads have usually been contacted before."""


@dataclass(frozen=True)
class LeadDriftSpec:
    """From `at` onward, change part of the lead flow; fields left `None` keep their value.

    - `campaign_weights` / `industry_weights` are merged into the current mix: raise or
      lower a value, set it to 0 to make it vanish, or name an emerging source
      (`webinar`, `partner`) to make it appear (data drift);
    - `conversion_lift` adds to the conversion log-odds of leads from the named sources
      (concept drift: the same lead converts differently). A lift replaces any earlier
      lift of that source, relative to the baseline ground truth; it does not accumulate;
    - `engagement_scale` multiplies the expected pages visited beyond the landing page
      (a site redesign, a bot wave) — the ground truth itself does not change;
    - `missing_rate` is the new chance that each of `MAY_BE_MISSING` is missing.
    """

    at: datetime
    campaign_weights: Mapping[str, float] | None = None
    industry_weights: Mapping[str, float] | None = None
    conversion_lift: Mapping[str, float] | None = None
    engagement_scale: float | None = None
    missing_rate: float | None = None

    def __post_init__(self) -> None:
        _require_aware("at", self.at)
        if self.campaign_weights is not None:
            _check_weights("campaign source", self.campaign_weights, SOURCE_EFFECT)
        if self.industry_weights is not None:
            _check_weights("industry", self.industry_weights, INDUSTRY_EFFECT)
        if self.conversion_lift is not None:
            _check_known("campaign source", self.conversion_lift, SOURCE_EFFECT)
        if self.engagement_scale is not None and self.engagement_scale <= 0:
            raise ValueError(f"engagement_scale must be > 0, got {self.engagement_scale}")
        _check_share("missing_rate", self.missing_rate)


@dataclass(frozen=True)
class LeadMix:
    """The lead flow in force from `since` until the next drift."""

    since: datetime
    campaign_weights: Mapping[str, float]
    industry_weights: Mapping[str, float]
    conversion_lift: Mapping[str, float]
    engagement_scale: float
    missing_rate: float

    def apply(self, spec: LeadDriftSpec) -> LeadMix:
        changes: dict[str, object] = {"since": spec.at}
        for name in ("campaign_weights", "industry_weights", "conversion_lift"):
            if (value := getattr(spec, name)) is not None:
                changes[name] = {**getattr(self, name), **value}
        for name in ("engagement_scale", "missing_rate"):
            if (value := getattr(spec, name)) is not None:
                changes[name] = value
        return replace(self, **changes)


def _default_end() -> datetime:
    return datetime(2026, 7, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LeadConfig:
    """What to generate: `count` leads over the `days` that end at `end`, and the drift.

    The default 150 days cover the trainer's default temporal split (T-90 … T-1 days).
    """

    seed: int = 0
    count: int = 5_000
    end: datetime = field(default_factory=_default_end)
    days: float = 150.0
    languages: Mapping[str, float] = field(default_factory=lambda: {"en-us": 0.7, "es-es": 0.3})
    """Language tags and their shares (the ground truth is the same in every language)."""
    campaign_weights: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_CAMPAIGN_WEIGHTS)
    )
    industry_weights: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_INDUSTRY_WEIGHTS)
    )
    missing_rate: float = 0.06
    """Chance that each of `MAY_BE_MISSING` is missing in a row (independently)."""
    noise_sd: float = 0.35
    """Standard deviation of the noise added to the conversion log-odds."""
    drift: tuple[LeadDriftSpec, ...] = ()

    def __post_init__(self) -> None:
        _require_aware("end", self.end)
        if self.days <= 0:
            raise ValueError(f"days must be > 0, got {self.days}")
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.noise_sd < 0:
            raise ValueError(f"noise_sd must be >= 0, got {self.noise_sd}")
        if not self.languages or any(w < 0 for w in self.languages.values()):
            raise ValueError("languages needs at least one tag and weights >= 0")
        if not any(w > 0 for w in self.languages.values()):
            raise ValueError("every language weight is 0")
        _check_weights("campaign source", self.campaign_weights, SOURCE_EFFECT)
        _check_weights("industry", self.industry_weights, INDUSTRY_EFFECT)
        _check_share("missing_rate", self.missing_rate)
        object.__setattr__(self, "drift", tuple(sorted(self.drift, key=lambda d: d.at)))
        for mix in self.mixes():
            for name in ("campaign_weights", "industry_weights"):
                if not any(w > 0 for w in getattr(mix, name).values()):
                    raise ValueError(f"every weight of {name} is 0 from {mix.since}")

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)

    def mixes(self) -> list[LeadMix]:
        """The lead flow in force before the first drift, then after each one."""
        mix = LeadMix(
            since=self.start,
            campaign_weights=dict(self.campaign_weights),
            industry_weights=dict(self.industry_weights),
            conversion_lift={},
            engagement_scale=1.0,
            missing_rate=self.missing_rate,
        )
        mixes = [mix]
        for spec in self.drift:
            mix = mix.apply(spec)
            mixes.append(mix)
        return mixes


def generate_leads(config: LeadConfig) -> pd.DataFrame:
    """`config.count` leads as a pandas DataFrame in `completed_at` order (columns `COLUMNS`).

    dtypes: `lead_id`, `language`, `industry`, `campaign_source`: str (missing = NaN);
    `completed_at`: datetime64[us, UTC]; `company_size`, `pages_visited`, `prior_contacts`:
    nullable Int64 (missing = <NA>); `time_on_site_s`, `conversion_probability`: float64.
    """
    n = config.count
    streams = iter(np.random.default_rng(config.seed).spawn(12))
    start_us = _epoch_us(config.start)
    span_us = _epoch_us(config.end) - start_us
    times_us = np.sort(start_us + next(streams).integers(0, span_us, size=n))
    mixes = config.mixes()
    since_us = np.array([_epoch_us(m.since) for m in mixes[1:]], dtype=np.int64)
    which = np.searchsorted(since_us, times_us, side="right")

    def per_mix(values: list[float]) -> np.ndarray:
        return np.asarray(values, dtype=float)[which]

    ids = next(streams).bytes(16 * n)
    languages = _pick(next(streams), n, [dict(config.languages)] * len(mixes), which)
    sources = _pick(next(streams), n, [m.campaign_weights for m in mixes], which)
    industries = _pick(next(streams), n, [m.industry_weights for m in mixes], which)
    size = np.exp(next(streams).normal(np.log(60.0), 1.5, size=n))
    company_size = np.clip(np.rint(size), 1, 500_000).astype(np.int64)
    mean_pages = np.array([_MEAN_PAGES[s] for s in sources]) * per_mix(
        [m.engagement_scale for m in mixes]
    )
    appetite = next(streams).gamma(1.5, mean_pages / 1.5)
    pages = 1 + next(streams).poisson(appetite)
    dwell = np.exp(next(streams).normal(np.log(50.0), 0.6, size=n))  # seconds per page
    time_on_site = np.round(pages * dwell, 1)
    warm = np.isin(sources, _WARM_SOURCES)
    prior = next(streams).poisson(np.where(warm, 1.8, 0.8))
    frame = pd.DataFrame(
        {
            "lead_id": pd.Series(
                [str(uuid.UUID(bytes=ids[16 * i : 16 * i + 16], version=4)) for i in range(n)],
                dtype="str",
            ),
            "language": pd.Series(languages, dtype="str"),
            "completed_at": pd.to_datetime(times_us, unit="us", utc=True).astype(
                "datetime64[us, UTC]"
            ),
            "company_size": pd.array(company_size, dtype="Int64"),
            "industry": pd.Series(industries, dtype="str"),
            "pages_visited": pd.array(pages, dtype="Int64"),
            "time_on_site_s": time_on_site,
            "campaign_source": pd.Series(sources, dtype="str"),
            "prior_contacts": pd.array(prior, dtype="Int64"),
        }
    )
    lift = np.zeros(n)
    for i, mix in enumerate(mixes):
        rows = which == i
        lift[rows] = [mix.conversion_lift.get(s, 0.0) for s in sources[rows]]
    logit = conversion_logit(frame) + lift
    logit += next(streams).normal(0.0, config.noise_sd, size=n)
    frame[TARGET] = 1.0 / (1.0 + np.exp(-logit))
    missing_rate = per_mix([m.missing_rate for m in mixes])
    blanks = next(streams).random((n, len(MAY_BE_MISSING))) < missing_rate[:, None]
    for j, column in enumerate(MAY_BE_MISSING):
        frame.loc[blanks[:, j], column] = None
    return frame


def conversion_logit(frame: pd.DataFrame) -> np.ndarray:
    """The noise-free conversion log-odds of complete leads, without any drift lift."""
    pages = frame["pages_visited"].to_numpy(dtype=float)
    per_page = frame["time_on_site_s"].to_numpy(dtype=float) / np.maximum(pages, 1.0)
    size = frame["company_size"].to_numpy(dtype=float)
    prior = frame["prior_contacts"].to_numpy(dtype=float)
    industry = np.array([INDUSTRY_EFFECT[v] for v in frame["industry"]])
    source = np.array([SOURCE_EFFECT[v] for v in frame["campaign_source"]])
    return (
        -2.0
        + 2.4 * np.tanh((pages - 3.0) / 5.0)
        + 0.6 * np.tanh((per_page - 60.0) / 60.0)
        - 0.35 * (np.log10(np.maximum(size, 1.0)) - 2.5) ** 2
        + 0.45 * np.minimum(prior, 3.0)
        - 0.3 * np.maximum(prior - 3.0, 0.0)
        + industry
        + source
    )


def conversion_probability(frame: pd.DataFrame) -> np.ndarray:
    """The noise-free conversion probability of complete leads, without any drift lift."""
    return 1.0 / (1.0 + np.exp(-conversion_logit(frame)))


# ------------------------------------------------------------------ helpers


def _pick(
    rng: np.random.Generator, n: int, weights: list[Mapping[str, float]], which: np.ndarray
) -> np.ndarray:
    """One name per row from the weights of its mix (inverse CDF on one uniform per row)."""
    names = sorted({name for w in weights for name, value in w.items() if value > 0})
    u = rng.random(n)
    picked = np.empty(n, dtype=object)
    for i, mix in enumerate(weights):
        rows = which == i
        cdf = np.cumsum([mix.get(name, 0.0) for name in names])
        index = np.searchsorted(cdf / cdf[-1], u[rows], side="right")
        picked[rows] = np.asarray(names, dtype=object)[np.minimum(index, len(names) - 1)]
    return picked


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _check_share(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


def _check_known(what: str, values: Mapping[str, float], known: Mapping[str, float]) -> None:
    if unknown := sorted(set(values) - set(known)):
        raise ValueError(f"unknown {what}(s) {unknown}; known: {', '.join(known)}")


def _check_weights(what: str, weights: Mapping[str, float], known: Mapping[str, float]) -> None:
    _check_known(what, weights, known)
    if negative := sorted(name for name, w in weights.items() if w < 0):
        raise ValueError(f"{what} weights must be >= 0: {negative}")
