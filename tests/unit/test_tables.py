"""The feature table store on a local folder and on fsspec's in-memory filesystem."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pytest

from driftloop_common.contracts.errors import PermanentError, RetryableError
from driftloop_common.storage.features import FeatureTableStore
from driftloop_synthetic.leads import LeadConfig, generate_leads

DAY1 = datetime(2026, 11, 24, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY1 + timedelta(days=2)


def leads(*rows: tuple[str, datetime], language: str = "en-us", score: float = 0.5):
    """Minimal lead rows: id, time, one feature and the target."""
    return pd.DataFrame(
        {
            "lead_id": [lead_id for lead_id, _ in rows],
            "language": language,
            "completed_at": pd.Series([at for _, at in rows], dtype="datetime64[us, UTC]"),
            "pages_visited": pd.array(range(1, len(rows) + 1), dtype="Int64"),
            "conversion_probability": score,
        }
    )


class Clock:
    """`ingested_at` under the test's control."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> FeatureTableStore:
    return FeatureTableStore(str(tmp_path / "store"), clock=clock)


@pytest.fixture
def memory_url() -> Iterator[str]:
    url = f"memory://driftloop-tests/{uuid.uuid4().hex}"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def ids(frame: pd.DataFrame) -> list[str]:
    return frame["lead_id"].tolist()


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_round_trip_of_generated_leads(
    backend: str, tmp_path: Path, memory_url: str, clock: Clock
) -> None:
    url = (tmp_path / "store").as_uri() if backend == "local" else memory_url
    store = FeatureTableStore(url, clock=clock)
    config = LeadConfig(seed=4, count=400, end=DAY3, days=6)
    rows = generate_leads(config)

    store.append(rows)
    read = store.read("es-es", config.start, config.end)

    expected = rows[rows.language == "es-es"].reset_index(drop=True)
    assert len(expected) > 50
    pd.testing.assert_frame_equal(read.drop(columns="ingested_at"), expected)  # dtypes too
    assert (read.ingested_at == clock.now).all()


def test_read_of_an_empty_store(store: FeatureTableStore) -> None:
    read = store.read("en-us", DAY1, DAY2)
    assert read.empty
    assert list(read.columns) == ["lead_id", "language", "completed_at", "ingested_at"]


# ---------------------------------------------------------------------- layout


def test_partitions_by_table_language_and_utc_day(store: FeatureTableStore, tmp_path: Path) -> None:
    late_in_new_york = datetime(2026, 11, 24, 21, 30, tzinfo=timezone(timedelta(hours=-5)))
    store.append(leads(("a", DAY1 + timedelta(hours=1)), ("b", late_in_new_york)))
    store.append(leads(("c", DAY1), language="ES_es"))

    root = tmp_path / "store"
    folders = sorted(p.relative_to(root).parent.as_posix() for p in root.rglob("*.parquet"))
    assert folders == [
        "tables/leads/language=en-us/day=2026-11-24",
        "tables/leads/language=en-us/day=2026-11-25",  # 02:30 UTC
        "tables/leads/language=es-es/day=2026-11-24",
    ]
    assert all(p.name.startswith("part-") for p in root.rglob("*.parquet"))
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temp file left
    assert ids(store.read("en-us", DAY2, DAY3)) == ["b"]
    assert ids(store.read("es-es", DAY1, DAY2)) == ["c"]


def test_tables_are_kept_apart(tmp_path: Path) -> None:
    FeatureTableStore(str(tmp_path)).append(leads(("a", DAY1)))
    other = FeatureTableStore(str(tmp_path), table="nba", id_column="lead_id")
    assert other.read("en-us", DAY1, DAY2).empty
    with pytest.raises(ValueError, match="table must match"):
        FeatureTableStore(str(tmp_path), table="../leads")


def test_each_append_writes_new_uniquely_named_files(
    store: FeatureTableStore, tmp_path: Path
) -> None:
    first = store.append(leads(("a", DAY1)))
    second = store.append(leads(("b", DAY1)))
    assert len(first) == len(second) == 1 and first != second
    assert len(list((tmp_path / "store").rglob("*.parquet"))) == 2
    assert ids(store.read("en-us", DAY1, DAY2)) == ["a", "b"]


# --------------------------------------------------------------------- windows


def test_window_includes_start_excludes_end_oldest_first(store: FeatureTableStore) -> None:
    store.append(leads(("late", DAY2), ("edge", DAY1), ("mid", DAY1 + timedelta(hours=5))))
    assert ids(store.read("en-us", DAY1, DAY2)) == ["edge", "mid"]
    assert ids(store.read("en-us", DAY1 + timedelta(microseconds=1), DAY3)) == ["mid", "late"]
    assert ids(store.read("en-us", DAY1, DAY1)) == []


def test_window_bounds_may_be_in_any_timezone(store: FeatureTableStore) -> None:
    store.append(leads(("a", DAY1 + timedelta(hours=3))))
    plus_two = timezone(timedelta(hours=2))
    assert ids(store.read("en-us", DAY1.astimezone(plus_two), DAY2.astimezone(plus_two))) == ["a"]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (datetime(2026, 11, 24), DAY2, "timezone-aware"),
        (DAY1, datetime(2026, 11, 25), "timezone-aware"),
        (DAY2, DAY1, "before start"),
    ],
)
def test_bad_bounds_are_rejected(
    store: FeatureTableStore, start: datetime, end: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        store.read("en-us", start, end)


def test_reading_one_day_neither_lists_nor_opens_other_days(
    store: FeatureTableStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(leads(("a", DAY1 + timedelta(hours=1))))
    (other_day,) = store.append(leads(("b", DAY2 + timedelta(hours=1))))
    # A corrupt file on day 2: any read that opened it would fail.
    Path(other_day.removeprefix("file://")).write_bytes(b"not parquet")
    listed: list[str] = []
    glob = store.fs.glob
    monkeypatch.setattr(store.fs, "glob", lambda pattern: listed.append(pattern) or glob(pattern))

    assert ids(store.read("en-us", DAY1, DAY2)) == ["a"]

    root = (tmp_path / "store").as_posix()
    assert listed == [f"{root}/tables/leads/language=en-us/day=2026-11-24/*.parquet"]
    with pytest.raises(pa.ArrowInvalid):  # the control: day 2 really is unreadable
        store.read("en-us", DAY1, DAY2 + timedelta(hours=2))


# ------------------------------------------------------------------ duplicates


def test_a_reappended_row_keeps_the_latest_ingested_copy(store: FeatureTableStore) -> None:
    store.append(leads(("a", DAY1), ("b", DAY1), score=0.1))
    store.append(leads(("a", DAY1), score=0.9))  # redelivered with a corrected target

    read = store.read("en-us", DAY1, DAY2)

    assert ids(read) == ["a", "b"]
    assert read.conversion_probability.tolist() == [0.9, 0.1]


def test_latest_means_ingested_at_not_file_order(tmp_path: Path) -> None:
    times = iter([DAY3, DAY2])  # the first append carries the later ingestion time
    store = FeatureTableStore(str(tmp_path), clock=lambda: next(times))
    store.append(leads(("a", DAY1), score=0.1))
    store.append(leads(("a", DAY1), score=0.9))
    assert store.read("en-us", DAY1, DAY2).conversion_probability.tolist() == [0.1]


def test_duplicates_within_one_append_keep_the_last(store: FeatureTableStore) -> None:
    rows = pd.concat([leads(("a", DAY1), score=0.1), leads(("a", DAY1), score=0.9)])
    store.append(rows)
    assert store.read("en-us", DAY1, DAY2).conversion_probability.tolist() == [0.9]


def test_files_with_different_columns_read_together(store: FeatureTableStore) -> None:
    store.append(leads(("a", DAY1)))
    store.append(leads(("b", DAY1)).assign(industry="retail"))
    read = store.read("en-us", DAY1, DAY2)
    assert ids(read) == ["a", "b"]
    assert read.industry.isna().tolist() == [True, False]


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (leads(("a", DAY1)).drop(columns="lead_id"), "'lead_id' is missing"),
        (leads(("a", DAY1)).drop(columns="language"), "'language' is missing"),
        (leads(("a", DAY1)).assign(lead_id=[None]), "null"),
        (leads(("a", DAY1)).assign(completed_at=[datetime(2026, 11, 24)]), "timezone-aware"),
        (leads(("a", DAY1), language="english"), "BCP 47"),
        (leads(("a", DAY1)).assign(odd=[object()]), "cannot be stored"),
    ],
)
def test_rows_that_can_never_be_stored_are_permanent_errors(
    store: FeatureTableStore, rows: pd.DataFrame, message: str, tmp_path: Path
) -> None:
    with pytest.raises(PermanentError, match=message):
        store.append(rows)
    assert not list((tmp_path / "store").rglob("*.parquet"))


def test_an_empty_frame_writes_nothing(store: FeatureTableStore, tmp_path: Path) -> None:
    assert store.append(leads()) == []
    assert not (tmp_path / "store").exists()


def test_storage_failures_are_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's folder should be")
    with pytest.raises(RetryableError, match="cannot write to the feature table leads"):
        FeatureTableStore(str(blocker)).append(leads(("a", DAY1)))


def test_files_that_disagree_on_a_type_are_a_permanent_error(store: FeatureTableStore) -> None:
    store.append(leads(("a", DAY1)))
    store.append(leads(("b", DAY1)).assign(pages_visited="many"))
    with pytest.raises(PermanentError, match="disagree"):
        store.read("en-us", DAY1, DAY2)
