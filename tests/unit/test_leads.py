"""The synthetic lead table: determinism, time span, missing values, the ground truth and
each drift knob; and `driftloop generate-leads` into a feature table store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from driftloop_cli import leads as cli
from driftloop_common.storage.features import FeatureTableStore
from driftloop_synthetic.leads import (
    CAMPAIGN_SOURCES,
    COLUMNS,
    EMERGING_SOURCES,
    INDUSTRIES,
    MAY_BE_MISSING,
    TARGET,
    LeadConfig,
    LeadDriftSpec,
    conversion_logit,
    conversion_probability,
    generate_leads,
)

END = datetime(2026, 7, 1, tzinfo=UTC)
START = END - timedelta(days=150)


def day(n: float) -> datetime:
    return START + timedelta(days=n)


def config(**changes) -> LeadConfig:
    return LeadConfig(**{"seed": 1, "count": 4000, "end": END, "days": 150, **changes})


def split_at(frame: pd.DataFrame, moment: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    before, after = frame[frame.completed_at < moment], frame[frame.completed_at >= moment]
    assert len(before) and len(after)
    return before, after


def share(frame: pd.DataFrame, column: str, value: str) -> float:
    return float((frame[column] == value).mean())


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    return generate_leads(config())


# ----------------------------------------------------------------- the table


def test_same_seed_same_rows_other_seed_other_rows(baseline: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate_leads(config()), baseline)
    other = generate_leads(config(seed=2))
    assert not set(other.lead_id) & set(baseline.lead_id)
    assert not np.allclose(other[TARGET], baseline[TARGET])


def test_columns_types_and_ranges(baseline: pd.DataFrame) -> None:
    assert tuple(baseline.columns) == COLUMNS
    assert baseline.lead_id.is_unique
    assert set(baseline.language) == {"en-us", "es-es"}
    assert set(baseline.industry.dropna()) == set(INDUSTRIES)
    assert set(baseline.campaign_source) == set(CAMPAIGN_SOURCES)  # no emerging source yet
    assert baseline[TARGET].between(0, 1).all()
    for column in ("company_size", "pages_visited", "prior_contacts"):
        assert str(baseline[column].dtype) == "Int64"
    assert (baseline.pages_visited >= 1).all() and (baseline.prior_contacts >= 0).all()
    size = baseline.company_size.dropna().astype(float)
    assert size.max() > 50 * size.median()  # heavy-tailed: a few very large companies


def test_rows_spread_over_the_days_before_end_in_time_order(baseline: pd.DataFrame) -> None:
    times = baseline.completed_at
    assert str(times.dt.tz) == "UTC"
    assert times.is_monotonic_increasing
    assert times.min() >= START and times.max() < END
    assert times.max() - times.min() > timedelta(days=145)
    assert times.dt.floor("D").nunique() == 150  # every day has leads


def test_missing_values_where_and_as_often_as_configured(baseline: pd.DataFrame) -> None:
    missing = baseline.isna().mean()
    for column in MAY_BE_MISSING:
        assert 0.04 < missing[column] < 0.08, column  # default rate 0.06
    assert missing.drop(list(MAY_BE_MISSING)).eq(0).all()
    assert not generate_leads(config(missing_rate=0.0)).isna().any().any()


def test_target_is_the_documented_ground_truth_plus_noise() -> None:
    exact = generate_leads(config(noise_sd=0.0, missing_rate=0.0))
    np.testing.assert_allclose(exact[TARGET], conversion_probability(exact), rtol=1e-12)
    noisy = generate_leads(config(missing_rate=0.0))
    assert not np.allclose(noisy[TARGET], conversion_probability(noisy), atol=1e-3)
    residual = np.log(noisy[TARGET] / (1 - noisy[TARGET])) - conversion_logit(noisy)
    assert residual.std() == pytest.approx(0.35, rel=0.1)


def test_ground_truth_rises_with_engagement_and_is_nonlinear() -> None:
    lead = pd.DataFrame(
        {
            "company_size": [300] * 4,
            "pages_visited": [1, 5, 20, 40],
            "time_on_site_s": [60.0, 300.0, 1200.0, 2400.0],
            "prior_contacts": [1] * 4,
            "industry": ["software"] * 4,
            "campaign_source": ["email"] * 4,
        }
    )
    p = conversion_probability(lead)
    assert p[0] < p[1] < p[2] <= p[3]
    assert p[3] - p[2] < (p[2] - p[1]) / 10  # saturates


# ---------------------------------------------------------------------- drift


def test_a_drift_leaves_every_row_before_it_unchanged(baseline: pd.DataFrame) -> None:
    drifted = generate_leads(
        config(
            drift=(
                LeadDriftSpec(at=day(100), campaign_weights={"webinar": 0.2, "social": 0.5}),
                LeadDriftSpec(at=day(100), conversion_lift={"referral": 2.0}),
            )
        )
    )
    before = baseline.completed_at < day(100)
    pd.testing.assert_frame_equal(drifted[before], baseline[before])
    assert not drifted[~before].equals(baseline[~before])


def test_campaign_mix_shift_and_a_new_source(baseline: pd.DataFrame) -> None:
    drifted = generate_leads(
        config(drift=(LeadDriftSpec(at=day(90), campaign_weights={"social": 0.6, "webinar": 0.2}),))
    )
    before, after = split_at(drifted, day(90))
    assert share(before, "campaign_source", "social") == pytest.approx(0.15, abs=0.03)
    assert share(after, "campaign_source", "social") > 0.3
    assert share(before, "campaign_source", "webinar") == 0
    assert share(after, "campaign_source", "webinar") > 0.08
    assert set(drifted.campaign_source) <= {*CAMPAIGN_SOURCES, *EMERGING_SOURCES}


def test_concept_drift_changes_the_ground_truth_of_one_source() -> None:
    lift = LeadDriftSpec(at=day(120), conversion_lift={"referral": 1.5})
    exact = config(noise_sd=0.0, missing_rate=0.0)
    drifted = generate_leads(config(noise_sd=0.0, missing_rate=0.0, drift=(lift,)))
    plain = generate_leads(exact)
    pd.testing.assert_frame_equal(  # same leads: only the outcome of some changed
        drifted.drop(columns=TARGET), plain.drop(columns=TARGET)
    )
    changed = (drifted.completed_at >= day(120)) & (drifted.campaign_source == "referral")
    assert changed.sum() > 20
    np.testing.assert_allclose(drifted[TARGET][~changed], plain[TARGET][~changed])
    expected = 1 / (1 + np.exp(-(conversion_logit(drifted[changed]) + 1.5)))
    np.testing.assert_allclose(drifted[TARGET][changed], expected, rtol=1e-12)
    assert drifted[TARGET][changed].mean() > plain[TARGET][changed].mean() + 0.15


def test_industry_mix_engagement_and_missing_rate_knobs() -> None:
    drifted = generate_leads(
        config(
            drift=(
                LeadDriftSpec(at=day(75), industry_weights={"retail": 0.6}),
                LeadDriftSpec(at=day(75), engagement_scale=0.3),
                LeadDriftSpec(at=day(75), missing_rate=0.4),
            )
        )
    )
    before, after = split_at(drifted, day(75))
    known_before, known_after = before.dropna(subset="industry"), after.dropna(subset="industry")
    assert share(known_before, "industry", "retail") == pytest.approx(0.14, abs=0.03)
    assert share(known_after, "industry", "retail") == pytest.approx(0.6 / 1.46, abs=0.05)
    assert after.pages_visited.mean() < 0.6 * before.pages_visited.mean()
    assert after.time_on_site_s.isna().mean() > 0.3 > 0.1 > before.time_on_site_s.isna().mean()


def test_later_drifts_merge_into_earlier_ones() -> None:
    mixes = config(
        drift=(
            LeadDriftSpec(at=day(100), conversion_lift={"email": -1.0}),
            LeadDriftSpec(at=day(50), conversion_lift={"referral": 1.0}),
        )
    ).mixes()
    assert [m.since for m in mixes] == [START, day(50), day(100)]
    assert mixes[2].conversion_lift == {"referral": 1.0, "email": -1.0}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"end": datetime(2026, 7, 1)}, "timezone-aware"),
        ({"campaign_weights": {"tiktok": 0.1}}, "unknown campaign source"),
        ({"industry_weights": {"retail": -1.0}}, ">= 0"),
        ({"missing_rate": 1.5}, "between 0 and 1"),
        ({"days": 0}, "days"),
        ({"languages": {"en-us": 0.0}}, "language"),
        (
            {
                "drift": (
                    LeadDriftSpec(at=END, campaign_weights=dict.fromkeys(CAMPAIGN_SOURCES, 0)),
                )
            },
            "every weight",
        ),
    ],
)
def test_bad_configs_are_rejected(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**changes)


def test_a_lift_for_an_unknown_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown campaign source"):
        LeadDriftSpec(at=END, conversion_lift={"tiktok": 1.0})


# ------------------------------------------------------------------------ CLI


def test_generate_leads_command_writes_the_table_the_trainer_reads(tmp_path: Path) -> None:
    app = typer.Typer()
    cli.register(app)
    app.callback()(lambda: None)
    store = str(tmp_path / "store")
    args = ["generate-leads", "--store", store, "--count", "300", "--days", "10"]
    args += ["--end", "2026-07-01", "--seed", "3", "-l", "en-us", "--concept-drift-at", "5"]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    assert "wrote 300 lead(s)" in result.output
    rows = FeatureTableStore(store).read("en-us", END - timedelta(days=10), END)
    expected = generate_leads(
        LeadConfig(
            seed=3,
            count=300,
            end=END,
            days=10,
            languages={"en-us": 1.0},
            drift=(LeadDriftSpec(at=END - timedelta(days=5), conversion_lift={"referral": 1.5}),),
        )
    )
    pd.testing.assert_frame_equal(rows.drop(columns="ingested_at"), expected)


def test_generate_leads_command_rejects_a_bad_mix(tmp_path: Path) -> None:
    app = typer.Typer()
    cli.register(app)
    app.callback()(lambda: None)
    args = ["generate-leads", "--store", str(tmp_path), "--campaign-shift-at", "3"]
    result = CliRunner().invoke(app, [*args, "--campaign-mix", "tiktok=1"])
    assert result.exit_code == 2
    assert "unknown campaign source" in result.output
    assert not (tmp_path / "tables").exists()
