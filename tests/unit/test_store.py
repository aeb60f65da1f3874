"""The interaction store on a local folder and on fsspec's in-memory filesystem."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftloop_common.contracts.errors import PermanentError, RetryableError
from driftloop_common.contracts.events import EncoderInfo, InteractionEmbedded
from driftloop_common.storage.interactions import (
    SCHEMA,
    InteractionStore,
    Provenance,
    embedding_matrix,
)

FP32 = EncoderInfo(id="sentence-transformers/all-MiniLM-L6-v2", precision="fp32")
INT8 = EncoderInfo(id="sentence-transformers/all-MiniLM-L6-v2", precision="int8")
DAY1 = datetime(2026, 11, 24, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY1 + timedelta(days=2)


def row(
    conversation_id: str,
    completed_at: datetime,
    *,
    language: str = "en-us",
    label: str | None = "billing",
    encoder: EncoderInfo = FP32,
    seed: int = 0,
) -> InteractionEmbedded:
    vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return InteractionEmbedded(
        conversation_id=conversation_id,
        language=language,
        completed_at=completed_at,
        embedding=vector.tolist(),
        encoder=encoder,
        label=label,
        text=f"text of {conversation_id}",
        queue="support",
        media_type="voice",
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
def store(tmp_path: Path, clock: Clock) -> InteractionStore:
    return InteractionStore(str(tmp_path / "store"), clock=clock)


@pytest.fixture
def memory_url() -> Iterator[str]:
    url = f"memory://driftloop-tests/{uuid.uuid4().hex}"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def ids(table: pa.Table) -> list[str]:
    return table.column("conversation_id").to_pylist()


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_round_trip(backend: str, tmp_path: Path, memory_url: str, clock: Clock) -> None:
    url = (tmp_path / "store").as_uri() if backend == "local" else memory_url
    store = InteractionStore(url, clock=clock)
    rows = [row("a", DAY1 + timedelta(hours=1), seed=1), row("b", DAY2, label=None, seed=2)]

    store.append(rows)
    table = store.read("en-us", DAY1, DAY3)

    assert table.schema == SCHEMA
    assert ids(table) == ["a", "b"]
    first = table.to_pylist()[0]
    assert first["text"] == "text of a"
    assert first["language"] == "en-us"
    assert first["completed_at"] == DAY1 + timedelta(hours=1)
    assert first["label"] == "billing"
    assert (first["queue"], first["media_type"]) == ("support", "voice")
    assert (first["encoder_id"], first["encoder_precision"]) == (FP32.id, "fp32")
    assert first["ingested_at"] == clock.now
    assert table.column("label").to_pylist()[1] is None
    np.testing.assert_array_equal(
        embedding_matrix(table), np.array([r.embedding for r in rows], dtype=np.float32)
    )


def test_read_of_an_empty_store_has_the_schema(store: InteractionStore) -> None:
    table = store.read("en-us", DAY1, DAY2)
    assert table.num_rows == 0
    assert table.schema == SCHEMA
    assert store.embeddings("en-us", DAY1, DAY2, encoder=FP32).shape == (0, 384)


def test_columns_are_selected_in_the_order_asked(store: InteractionStore) -> None:
    store.append([row("a", DAY1)])
    table = store.read("en-us", DAY1, DAY2, columns=["label", "language"])
    assert table.column_names == ["label", "language"]
    assert table.to_pylist() == [{"label": "billing", "language": "en-us"}]
    with pytest.raises(ValueError, match="unknown columns"):
        store.read("en-us", DAY1, DAY2, columns=["nope"])


# ---------------------------------------------------------------------- layout


def test_partitions_by_language_and_utc_day(store: InteractionStore, tmp_path: Path) -> None:
    # 23:30 at UTC-02:00 is 01:30 UTC the next day: the partition follows UTC.
    late_evening = datetime(2026, 11, 24, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    written = store.append(
        [row("a", DAY1), row("b", late_evening), row("c", DAY1, language="ES_es")]
    )

    root = tmp_path / "store"
    files = sorted(p.relative_to(root).parent.as_posix() for p in root.rglob("*.parquet"))
    assert files == [
        "language=en-us/day=2026-11-24",
        "language=en-us/day=2026-11-25",
        "language=es-es/day=2026-11-24",
    ]
    assert len(written) == 3
    assert all(url.startswith("file://") for url in written)
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temp file left
    assert ids(store.read("es-es", DAY1, DAY2)) == ["c"]


def test_each_append_writes_new_uniquely_named_files(
    store: InteractionStore, tmp_path: Path
) -> None:
    first = store.append([row("a", DAY1), row("b", DAY1)])
    second = store.append([row("c", DAY1)])

    assert len(first) == len(second) == 1
    assert first != second
    assert len(list((tmp_path / "store").rglob("*.parquet"))) == 2
    assert ids(store.read("en-us", DAY1, DAY2)) == ["a", "b", "c"]


# ---------------------------------------------------------------- time windows


def test_window_includes_start_and_excludes_end(store: InteractionStore) -> None:
    start, end = DAY1 + timedelta(hours=6), DAY2 + timedelta(hours=6)
    tick = timedelta(microseconds=1)
    store.append(
        [
            row("before", start - tick),
            row("at-start", start),
            row("last", end - tick),
            row("at-end", end),
        ]
    )
    assert ids(store.read("en-us", start, end)) == ["at-start", "last"]
    assert ids(store.read("en-us", start, start)) == []


def test_window_bounds_may_be_in_any_timezone(store: InteractionStore) -> None:
    store.append([row("a", DAY1 + timedelta(hours=3))])
    plus_five = timezone(timedelta(hours=5))
    start = datetime(2026, 11, 24, 7, 59, tzinfo=plus_five)  # 02:59 UTC
    assert ids(store.read("en-us", start, start + timedelta(minutes=2))) == ["a"]


def test_naive_bounds_are_rejected(store: InteractionStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.read("en-us", datetime(2026, 11, 24), DAY2)


def test_reading_one_day_neither_lists_nor_opens_other_days(
    store: InteractionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append([row("a", DAY1 + timedelta(hours=1))])
    (other_day,) = store.append([row("b", DAY2 + timedelta(hours=1))])
    # A corrupt file on day 2: any read that opened it would fail.
    Path(other_day.removeprefix("file://")).write_bytes(b"not parquet")
    listed: list[str] = []
    glob = store.fs.glob
    monkeypatch.setattr(store.fs, "glob", lambda pattern: listed.append(pattern) or glob(pattern))

    assert ids(store.read("en-us", DAY1, DAY2)) == ["a"]

    assert listed == [f"{(tmp_path / 'store').as_posix()}/language=en-us/day=2026-11-24/*.parquet"]
    with pytest.raises(pa.ArrowInvalid):  # the control: day 2 really is unreadable
        store.read("en-us", DAY1, DAY2 + timedelta(hours=2))


# ------------------------------------------------------------------- redelivery


def test_redelivered_rows_keep_the_latest_ingested_copy(store: InteractionStore) -> None:
    store.append([row("a", DAY1, label=None, seed=1), row("b", DAY1)])
    store.append([row("a", DAY1, label="billing", seed=2)])  # redelivered, now labelled

    table = store.read("en-us", DAY1, DAY2)

    assert ids(table) == ["a", "b"]
    assert table.column("label").to_pylist() == ["billing", "billing"]
    np.testing.assert_array_equal(embedding_matrix(table)[0], row("a", DAY1, seed=2).embedding)


def test_latest_means_ingested_at_not_file_order(tmp_path: Path) -> None:
    times = iter([DAY3, DAY2])  # the first append carries the later ingestion time
    store = InteractionStore(str(tmp_path), clock=lambda: next(times))
    store.append([row("a", DAY1, label="first")])
    store.append([row("a", DAY1, label="second")])
    assert store.read("en-us", DAY1, DAY2).column("label").to_pylist() == ["first"]


def test_duplicates_within_one_append_keep_the_last(store: InteractionStore) -> None:
    store.append([row("a", DAY1, label="old"), row("a", DAY1, label="new")])
    assert store.read("en-us", DAY1, DAY2).column("label").to_pylist() == ["new"]


# ------------------------------------------------------------------- completeness


def test_a_copy_from_fewer_pieces_never_replaces_a_more_complete_one(
    store: InteractionStore,
) -> None:
    # A restart re-read a conversation from its commit floor, past its first piece: the
    # newer copy lacks the head of the text and the label.
    whole = row("a", DAY1, label="lost_card").model_copy(update={"text": "stolen. block it"})
    store.append([whole], provenance={"a": Provenance(pieces=4, first_offset=0)})
    poorer = row("a", DAY1, label=None).model_copy(update={"text": "block it"})
    store.append([poorer], provenance={"a": Provenance(pieces=3, first_offset=2)})

    [kept] = store.read("en-us", DAY1, DAY2).to_pylist()
    assert (kept["text"], kept["label"], kept["pieces"], kept["first_offset"]) == (
        "stolen. block it",
        "lost_card",
        4,
        0,
    )
    assert ids(store.read("en-us", DAY1, DAY2, labelled_only=True)) == ["a"]
    assert ids(store.oldest("en-us", 1)) == ["a"]
    assert store.oldest("en-us", 1).column("pieces").to_pylist() == [4]


def test_a_copy_as_complete_or_more_replaces_it(store: InteractionStore) -> None:
    store.append([row("a", DAY1, label=None)], provenance={"a": Provenance(4, 0)})
    store.append([row("a", DAY1, label="relabelled")], provenance={"a": Provenance(4, 0)})
    assert store.read("en-us", DAY1, DAY2).column("label").to_pylist() == ["relabelled"]
    store.append([row("a", DAY1, label="late piece")], provenance={"a": Provenance(5, 0)})
    assert store.read("en-us", DAY1, DAY2).column("label").to_pylist() == ["late piece"]


def test_files_from_before_the_provenance_columns_are_read_as_unknown(
    store: InteractionStore, tmp_path: Path
) -> None:
    # A file as the store wrote it before `pieces` and `first_offset` existed.
    store.append([row("old", DAY1, label="x"), row("both", DAY1, label="old copy")])
    [written] = (tmp_path / "store").rglob("*.parquet")
    legacy = pq.read_table(written).drop_columns(["pieces", "first_offset"])
    pq.write_table(legacy, written)
    assert "pieces" not in pq.read_schema(written).names

    store.append([row("both", DAY1, label="new copy")], provenance={"both": Provenance(2, 7)})
    table = store.read("en-us", DAY1, DAY2)
    assert table.schema == SCHEMA
    assert table.select(["conversation_id", "label", "pieces", "first_offset"]).to_pylist() == [
        {"conversation_id": "both", "label": "new copy", "pieces": 2, "first_offset": 7},
        {"conversation_id": "old", "label": "x", "pieces": None, "first_offset": None},
    ]
    # unknown against unknown: the latest, as before
    store.append([row("old", DAY1, label="y")])
    assert store.read("en-us", DAY1, DAY2).column("label").to_pylist() == ["new copy", "y"]


def test_pieces_stored_per_day(store: InteractionStore) -> None:
    store.append(
        [row("a", DAY1), row("b", DAY1), row("c", DAY2)],
        provenance={"a": Provenance(3, 0), "c": Provenance(1, 5)},
    )
    store.append([row("a", DAY1)], provenance={"a": Provenance(2, 1)})
    assert store.pieces_stored("en-us", DAY1.date().isoformat()) == {"a": 3}  # b: unknown
    assert store.pieces_stored("en-us", DAY2.date().isoformat()) == {"c": 1}
    assert store.pieces_stored("en-us", DAY3.date().isoformat()) == {}


def test_labelled_only_judges_the_latest_copy(store: InteractionStore) -> None:
    store.append([row("a", DAY1, label="billing"), row("b", DAY1, label=None)])
    store.append([row("a", DAY1, label=None)])
    assert ids(store.read("en-us", DAY1, DAY2, labelled_only=True)) == []
    store.append([row("b", DAY1, label="sales")])
    assert ids(store.read("en-us", DAY1, DAY2, labelled_only=True)) == ["b"]


# ---------------------------------------------------------------------- encoders


def test_encoder_filter_never_mixes_precisions(store: InteractionStore) -> None:
    store.append([row("a", DAY1, encoder=FP32), row("b", DAY1, encoder=INT8)])

    assert ids(store.read("en-us", DAY1, DAY2)) == ["a", "b"]
    assert ids(store.read("en-us", DAY1, DAY2, encoder=FP32)) == ["a"]
    assert ids(store.read("en-us", DAY1, DAY2, encoder=INT8)) == ["b"]
    other = EncoderInfo(id="another/model", precision="fp32")
    assert ids(store.read("en-us", DAY1, DAY2, encoder=other)) == []


def test_embeddings_of_one_encoder(store: InteractionStore) -> None:
    store.append([row("a", DAY1, seed=1), row("b", DAY1, encoder=INT8), row("c", DAY1, seed=3)])
    vectors = store.embeddings("en-us", DAY1, DAY2, encoder=FP32)
    assert vectors.dtype == np.float32
    expected = [row("a", DAY1, seed=1).embedding, row("c", DAY1, seed=3).embedding]
    np.testing.assert_array_equal(vectors, np.array(expected, dtype=np.float32))


# ------------------------------------------------------------------- baseline


def test_oldest_reads_from_the_first_day_and_stops_early(
    store: InteractionStore, tmp_path: Path
) -> None:
    store.append([row("d2-late", DAY2 + timedelta(hours=5)), row("d2-early", DAY2)])
    store.append([row("d1", DAY1 + timedelta(hours=12)), row("d1-int8", DAY1, encoder=INT8)])
    (last_day,) = store.append([row("d3", DAY3)])
    Path(last_day.removeprefix("file://")).write_bytes(b"not parquet")  # must not be opened

    assert ids(store.oldest("en-us", 2)) == ["d1-int8", "d1"]
    assert ids(store.oldest("en-us", 2, encoder=FP32)) == ["d1", "d2-early"]
    assert store.oldest("en-us", 2, columns=["label"]).column_names == ["label"]
    assert store.oldest("fr-fr", 5).num_rows == 0


# ------------------------------------------------------------------ bad input


def test_a_vector_of_the_wrong_length_is_a_permanent_error(store: InteractionStore) -> None:
    bad = row("a", DAY1).model_copy(update={"embedding": [0.0] * 3})
    with pytest.raises(PermanentError, match="3 dimensions") as err:
        store.append([bad])
    assert err.value.code == "embedding_dimension"


@pytest.mark.parametrize("language", ["../etc", "en/us", ""])
def test_a_language_that_is_not_a_tag_is_a_permanent_error(
    store: InteractionStore, language: str
) -> None:
    with pytest.raises(PermanentError, match="BCP 47"):
        store.append([row("a", DAY1, language=language)])


def test_text_that_is_not_valid_unicode_is_refused_before_anything_is_written(
    store: InteractionStore, tmp_path: Path
) -> None:
    # "\udfff" is valid JSON; the string it gives has no UTF-8 form.
    bad = row("bad", DAY1).model_copy(update={"text": "card \udfff stolen"})
    good = [row("a", DAY1), row("b", DAY2)]
    with pytest.raises(PermanentError) as err:
        store.append([*good, bad])
    assert err.value.code == "unstorable"
    str(err.value).encode("utf-8")  # a reason a Kafka header can carry
    assert list((tmp_path / "store").rglob("*.parquet")) == []

    refused = store.unstorable([*good, bad, row("c", DAY1, language="../etc")])
    assert sorted(refused) == ["bad", "c"]
    assert refused["bad"].code == "unstorable" and refused["c"].code == "language"
    assert list((tmp_path / "store").rglob("*.parquet")) == []  # checking writes nothing


def test_storage_failures_are_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's folder should be")
    with pytest.raises(RetryableError, match="cannot write to the interaction store"):
        InteractionStore(str(blocker)).append([row("a", DAY1)])
