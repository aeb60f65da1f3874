"""`driftloop generate-leads`: a synthetic lead table, with drift, into a feature table store.

The rows go where the trainer reads lead-scoring data (`<store>/tables/leads/…`).
Drift knobs take days counted from the start of the table (`--end` minus `--days`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from driftloop_cli.generate import (
    DAY_FORMATS,
    DriftOption,
    GenerationOption,
    describe_drift,
    fail,
    parse_pairs,
    progress,
)
from driftloop_common.contracts.errors import DriftloopError
from driftloop_common.runtime.settings import default_store_url
from driftloop_common.storage.features import FeatureTableStore
from driftloop_synthetic import leads

err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add `generate-leads` to the `driftloop` command."""
    app.command("generate-leads")(generate_leads)


def generate_leads(
    store: Annotated[
        str | None,
        GenerationOption(
            "--store",
            help="Store URL (a folder or any fsspec URL); rows go to <store>/tables/leads. "
            "Default: the local run's store.",
            envvar="DRIFTLOOP_STORE_URL",
            show_default=False,
        ),
    ] = None,
    count: Annotated[int, GenerationOption("--count", "-n", min=0, help="Leads to generate.")] = (
        5_000
    ),
    days: Annotated[float, GenerationOption("--days", min=1.0, help="Days the table spans.")] = (
        150.0
    ),
    end: Annotated[
        datetime | None,
        GenerationOption(
            "--end",
            formats=DAY_FORMATS,
            help="End of the table (UTC). Default: now; give a date for reproducible output.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, GenerationOption("--seed", help="Same seed and options, same rows.")] = 0,
    language: Annotated[
        list[str] | None,
        GenerationOption(
            "--language",
            "-l",
            help="Language tag; repeat for several, shared evenly. Default: en-us 70 %, "
            "es-es 30 %.",
            show_default=False,
        ),
    ] = None,
    missing_rate: Annotated[
        float,
        GenerationOption(
            "--missing-rate",
            min=0.0,
            max=1.0,
            help="Chance that each of company_size, industry, time_on_site_s is missing.",
        ),
    ] = 0.06,
    campaign_shift_at: Annotated[
        float | None, DriftOption("--campaign-shift-at", help="Day the campaign mix changes.")
    ] = None,
    campaign_mix: Annotated[
        str | None,
        DriftOption(
            "--campaign-mix",
            help="New weights from --campaign-shift-at, e.g. social=0.4,referral=0.02 (merged "
            f"into the default mix, which sums to 1). Sources: {', '.join(leads.SOURCE_EFFECT)}.",
        ),
    ] = None,
    new_source_at: Annotated[
        float | None, DriftOption("--new-source-at", help="Day a new campaign source appears.")
    ] = None,
    new_source: Annotated[
        str, DriftOption("--new-source", help=f"Which one: {', '.join(leads.EMERGING_SOURCES)}.")
    ] = leads.EMERGING_SOURCES[0],
    new_source_weight: Annotated[
        float, DriftOption("--new-source-weight", min=0.0, help="Its weight (~ its share).")
    ] = 0.15,
    concept_drift_at: Annotated[
        float | None,
        DriftOption(
            "--concept-drift-at", help="Day leads of some sources start converting differently."
        ),
    ] = None,
    conversion_lift: Annotated[
        str,
        DriftOption(
            "--conversion-lift",
            help="Log-odds added from --concept-drift-at, per source, e.g. referral=1.5.",
        ),
    ] = "referral=1.5",
    industry_shift_at: Annotated[
        float | None, DriftOption("--industry-shift-at", help="Day the industry mix changes.")
    ] = None,
    industry_mix: Annotated[
        str,
        DriftOption(
            "--industry-mix",
            help="New weights from --industry-shift-at, merged into the default mix. "
            f"Industries: {', '.join(leads.INDUSTRIES)}.",
        ),
    ] = "retail=0.35,public_sector=0.2",
    engagement_shift_at: Annotated[
        float | None,
        DriftOption(
            "--engagement-shift-at", help="Day the site's engagement changes (pages visited)."
        ),
    ] = None,
    engagement_scale: Annotated[
        float,
        DriftOption(
            "--engagement-scale",
            min=0.01,
            help="Factor on the expected pages visited from --engagement-shift-at.",
        ),
    ] = 0.5,
) -> None:
    """Write a synthetic lead-scoring table (model type lead-score) into a feature store.

    150 days, referral leads converting much better from day 120:

    driftloop generate-leads --store ./store --count 20000 --end 2026-07-01
    --concept-drift-at 120 --conversion-lift referral=1.5
    """
    store = store or default_store_url()
    last = datetime.now(UTC) if end is None else end.replace(tzinfo=end.tzinfo or UTC)
    first = last - timedelta(days=days)

    def day(offset: float) -> datetime:
        return first + timedelta(days=offset)

    try:
        drift: list[leads.LeadDriftSpec] = []
        if campaign_shift_at is not None:
            if campaign_mix is None:
                raise fail("--campaign-shift-at needs --campaign-mix", 2)
            weights = parse_pairs(campaign_mix, "--campaign-mix")
            drift.append(leads.LeadDriftSpec(at=day(campaign_shift_at), campaign_weights=weights))
        elif campaign_mix is not None:
            raise fail("--campaign-mix needs --campaign-shift-at", 2)
        if new_source_at is not None:
            if new_source not in leads.EMERGING_SOURCES:
                raise fail(f"--new-source must be one of {', '.join(leads.EMERGING_SOURCES)}", 2)
            drift.append(
                leads.LeadDriftSpec(
                    at=day(new_source_at), campaign_weights={new_source: new_source_weight}
                )
            )
        if concept_drift_at is not None:
            lift = parse_pairs(conversion_lift, "--conversion-lift")
            drift.append(leads.LeadDriftSpec(at=day(concept_drift_at), conversion_lift=lift))
        if industry_shift_at is not None:
            weights = parse_pairs(industry_mix, "--industry-mix")
            drift.append(leads.LeadDriftSpec(at=day(industry_shift_at), industry_weights=weights))
        if engagement_shift_at is not None:
            drift.append(
                leads.LeadDriftSpec(at=day(engagement_shift_at), engagement_scale=engagement_scale)
            )
        languages = dict.fromkeys(language, 1.0) if language else {"en-us": 0.7, "es-es": 0.3}
        config = leads.LeadConfig(
            seed=seed,
            count=count,
            end=last,
            days=days,
            languages=languages,
            missing_rate=missing_rate,
            drift=tuple(drift),
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from exc

    fields = ("campaign_weights", "industry_weights", "conversion_lift", "engagement_scale")
    describe_drift(config.drift, first, fields)
    try:
        table_store = FeatureTableStore(store, table="leads")
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    with progress() as bar:
        task = bar.add_task("generating", total=None)
        frame = leads.generate_leads(config)
        by_day = frame.groupby(frame["completed_at"].dt.floor("D"), sort=True)
        bar.update(task, description=f"writing to {store}", total=by_day.ngroups)
        files = 0
        try:
            for _, rows in by_day:
                files += len(table_store.append(rows))
                bar.advance(task)
        except DriftloopError as exc:
            raise fail(str(exc)) from exc
    err.print(_summary(frame), highlight=False)
    err.print(
        f"wrote {len(frame)} lead(s) in {files} file(s) "
        f"({config.start:%Y-%m-%d} → {config.end:%Y-%m-%d}) to {store}",
        highlight=False,
    )


def _summary(frame: pd.DataFrame) -> Table:
    table = Table(title="leads written")
    for name in ("language", "rows", "first", "last", "mean conversion", "rows with a gap"):
        table.add_column(name, justify="left" if name == "language" else "right")
    gaps = frame[list(leads.MAY_BE_MISSING)].isna().any(axis=1)
    for language, rows in frame.groupby("language", sort=True):
        table.add_row(
            str(language),
            str(len(rows)),
            f"{rows['completed_at'].min():%Y-%m-%d}",
            f"{rows['completed_at'].max():%Y-%m-%d}",
            f"{rows[leads.TARGET].mean():.3f}",
            f"{gaps[rows.index].mean():.1%}",
        )
    return table
