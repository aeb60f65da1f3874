"""The interaction store: embedded interactions as Parquet on any fsspec URL.

Layout and write rules: `storage.parquet` (`<url>/language=en-us/day=2026-11-24/part-….parquet`,
one new file per partition and append, reads pruned to the window's days); `read` adds
`language` back as a column.

At-least-once delivery means the collector may store the same conversation twice. Rows are
never rewritten; instead every read de-duplicates by `conversation_id`, keeping the most
complete copy: the one built from the most source records (`pieces`), and among equals
the latest `ingested_at` (a redelivery may carry a label the first copy lacked). After a
restart the collector re-reads Kafka from its commit floor, which can lie inside a
conversation it already stored: the copy it rebuilds then lacks the pieces before the
floor, and must never replace the whole one. Rows written without `pieces` (files from
before the column existed, appends that do not say) are of unknown completeness and rank
below any known copy: between them the latest wins, as it always did (so a correction
must be appended with its `provenance` to replace a known copy).

A redelivered message has the same `completed_at`, hence lands in the same partition as
the first copy, so de-duplicating within the rows read is enough.

Rows the store can never hold (a bad language tag, a vector of the wrong length, text that
is not valid Unicode) raise `PermanentError` before anything is written; `unstorable`
finds which rows of a refused batch they were, without writing anything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import EncoderInfo, InteractionEmbedded
from driftloop_common.ml.encoder import EMBEDDING_DIM
from driftloop_common.storage.parquet import (
    PartitionedParquet,
    data_errors,
    first_per_id,
    language_tag,
    time_window,
)


@dataclass(frozen=True)
class Provenance:
    """Which source records a row was built from: how many (`pieces`), and the offset of
    the first one. Of two copies of a conversation the one built from more pieces is the
    more complete."""

    pieces: int
    first_offset: int


def _schema(dim: int) -> pa.Schema:
    """The columns `read` returns, in order.

    `embedding` is a fixed_size_list: the schema itself enforces the dimension (a vector of
    the wrong length cannot be written), there are no per-row offsets, and a column turns
    into an `(n, dim)` array without copying row by row (`embedding_matrix`).
    `pieces` and `first_offset` are the row's `Provenance` (null: not known; files written
    before these columns existed read as null).
    """
    utc_us = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            pa.field("conversation_id", pa.string(), nullable=False),
            pa.field("text", pa.string()),
            pa.field("language", pa.string(), nullable=False),
            pa.field("completed_at", utc_us, nullable=False),
            pa.field("label", pa.string()),
            pa.field("queue", pa.string()),
            pa.field("media_type", pa.string()),
            pa.field("encoder_id", pa.string(), nullable=False),
            pa.field("encoder_precision", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("ingested_at", utc_us, nullable=False),
            pa.field("pieces", pa.int32()),
            pa.field("first_offset", pa.int64()),
        ]
    )


SCHEMA = _schema(EMBEDDING_DIM)
"""The store's columns for the default encoder (all-MiniLM-L6-v2, 384 dimensions)."""


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The `embedding` column of a `read` result as an `(n, dim)` float32 array."""
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


class InteractionStore(PartitionedParquet):
    """Append and read embedded interactions under `url` (a path or any fsspec URL).

    `clock` stamps `ingested_at` (injectable for tests and replays).
    """

    def __init__(
        self,
        url: str,
        *,
        dim: int = EMBEDDING_DIM,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            url, name="the interaction store", clock=clock, storage_options=storage_options
        )
        self.dim = dim
        self.schema = _schema(dim)
        self._file_schema = self.schema.remove(self.schema.get_field_index("language"))

    # ------------------------------------------------------------------ write

    def append(
        self,
        rows: Iterable[InteractionEmbedded],
        *,
        provenance: Mapping[str, Provenance] | None = None,
    ) -> list[str]:
        """Store `rows`: one new Parquet file per (language, day); returns their URLs.

        `provenance` maps conversation ids to what their row was built from (rows without
        one are of unknown completeness). A conversation that appears twice in `rows` is
        stored once (the last copy wins). Raises `PermanentError` for a row that can never
        be stored (bad language tag, wrong embedding length, text that is not valid
        Unicode), before writing anything, and `RetryableError` when the storage fails. A
        failed call may have written some of its partitions; calling it again is safe,
        because reads de-duplicate.
        """
        latest = {row.conversation_id: row for row in rows}
        if not latest:
            return []
        ingested_at = self._clock()
        partitions: dict[tuple[str, str], list[InteractionEmbedded]] = defaultdict(list)
        for row in latest.values():
            self._check(row)
            day = row.completed_at.astimezone(UTC).date().isoformat()
            partitions[(language_tag(row.language), day)].append(row)
        with data_errors("the batch"):
            tables = {
                key: self._table(part, ingested_at, provenance or {})
                for key, part in sorted(partitions.items())
            }
        with data_errors("the batch"):
            return self._write(tables.items(), ingested_at)

    def unstorable(self, rows: Iterable[InteractionEmbedded]) -> dict[str, PermanentError]:
        """The rows `append` would refuse, each with why (by conversation id).

        Each row is checked alone, in memory (its table is built and encoded as Parquet;
        nothing is written): for finding the few bad rows of a batch `append` refused, so
        that the rest can still be stored."""
        bad: dict[str, PermanentError] = {}
        at = datetime.fromtimestamp(0, UTC)  # any time: nothing is kept
        for row in rows:
            try:
                self._check(row)
                language_tag(row.language)
                with data_errors(f"conversation {row.conversation_id!a}"):
                    pq.write_table(self._table([row], at, {}), pa.BufferOutputStream())
            except PermanentError as exc:
                bad[row.conversation_id] = exc
        return bad

    def pieces_stored(self, language: str, day: str) -> dict[str, int]:
        """Conversation id → `pieces` of its most complete copy, for the rows of `language`
        stored under `day` (`2026-11-24`) whose completeness is known.

        Lets the collector tell, after a restart, whether a conversation it rebuilt from
        Kafka was already stored whole (one read per day, column-pruned)."""
        language = language_tag(language)
        with self._storage_errors("read from"):
            table = self._scan(self._files(language, day), None, None, ["pieces"], False)
        table = table.filter(pc.is_valid(table.column("pieces")))
        return dict(
            zip(
                table.column("conversation_id").to_pylist(),
                table.column("pieces").to_pylist(),
                strict=True,
            )
        )

    def _check(self, row: InteractionEmbedded) -> None:
        if len(row.embedding) != self.dim:
            raise PermanentError(
                f"conversation {row.conversation_id}: embedding has {len(row.embedding)} "
                f"dimensions, the store holds {self.dim}",
                code="embedding_dimension",
            )

    def _table(
        self,
        rows: list[InteractionEmbedded],
        ingested_at: datetime,
        provenance: Mapping[str, Provenance],
    ) -> pa.Table:
        vectors = np.asarray([row.embedding for row in rows], dtype=np.float32).reshape(-1)
        sources = [provenance.get(row.conversation_id) for row in rows]
        columns = {
            "conversation_id": [row.conversation_id for row in rows],
            "text": [row.text for row in rows],
            "completed_at": [row.completed_at for row in rows],
            "label": [row.label for row in rows],
            "queue": [row.queue for row in rows],
            "media_type": [row.media_type for row in rows],
            "encoder_id": [row.encoder.id for row in rows],
            "encoder_precision": [row.encoder.precision for row in rows],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors), self.dim),
            "ingested_at": [ingested_at] * len(rows),
            "pieces": [None if p is None else p.pieces for p in sources],
            "first_offset": [None if p is None else p.first_offset for p in sources],
        }
        table = pa.table(columns, schema=self._file_schema)
        # Sorted rows give tight row-group statistics for time filters.
        return table.sort_by("completed_at")

    # ------------------------------------------------------------------- read

    def read(
        self,
        language: str,
        start: datetime,
        end: datetime,
        *,
        columns: Sequence[str] | None = None,
        encoder: EncoderInfo | None = None,
        labelled_only: bool = False,
    ) -> pa.Table:
        """Rows of `language` with `start <= completed_at < end`, oldest first.

        Returns a `pyarrow.Table` (not pandas) so embeddings stay one contiguous
        fixed-size-list column (`embedding_matrix` makes it an array without copying
        row by row) and types stay exact; `.to_pandas()` is one call away.

        `encoder` keeps only vectors of that encoder id *and* precision. Duplicates of a
        conversation are reduced to the most complete copy (see the module docstring)
        before `labelled_only` drops unlabelled rows, so a relabelled conversation is
        judged by its latest whole copy.
        """
        start, end, window = time_window(start, end)
        language = language_tag(language)
        files = self._files_between(language, start, end)
        with self._storage_errors("read from"):
            table = self._scan(files, window, encoder, columns, labelled_only)
        return self._finish(table, language, columns, labelled_only)

    def embeddings(
        self,
        language: str,
        start: datetime,
        end: datetime,
        *,
        encoder: EncoderInfo,
        labelled_only: bool = False,
    ) -> np.ndarray:
        """The window's embeddings as an `(n, dim)` float32 array, oldest first.

        `encoder` is required: vectors of different encoders or precisions are not comparable.
        """
        table = self.read(
            language,
            start,
            end,
            columns=["embedding"],
            encoder=encoder,
            labelled_only=labelled_only,
        )
        return embedding_matrix(table)

    def oldest(
        self,
        language: str,
        n: int,
        *,
        columns: Sequence[str] | None = None,
        encoder: EncoderInfo | None = None,
    ) -> pa.Table:
        """The `n` oldest rows of `language` (fewer if the store has fewer), oldest first.

        Bootstraps a drift baseline before any model exists. Reads day folders from the
        first one on and stops as soon as it has `n` rows.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        language = language_tag(language)
        found = None
        with self._storage_errors("read from"):
            for day in self._days_stored(language):
                part = self._scan(self._files(language, day), None, encoder, columns, False)
                found = part if found is None else pa.concat_tables([found, part])
                found = most_complete_copies(found)
                if found.num_rows >= n:
                    break
        if found is None:
            found = self._scan([], None, encoder, columns, False)
        return self._finish(found, language, columns, False).slice(0, n)

    # -------------------------------------------------------------- internals

    def _scan(
        self,
        files: list[str],
        window: ds.Expression | None,
        encoder: EncoderInfo | None,
        columns: Sequence[str] | None,
        labelled_only: bool,
    ) -> pa.Table:
        wanted = self._file_schema.names if columns is None else self._columns(columns)
        needed = {"conversation_id", "completed_at", "ingested_at", "pieces"}
        if labelled_only:
            needed.add("label")
        names = [name for name in self._file_schema.names if name in needed or name in wanted]
        condition = window
        if encoder is not None:
            same = (ds.field("encoder_id") == encoder.id) & (
                ds.field("encoder_precision") == encoder.precision
            )
            condition = same if condition is None else condition & same
        dataset = ds.dataset(files, schema=self._file_schema, format="parquet", filesystem=self.fs)
        return most_complete_copies(dataset.to_table(columns=names, filter=condition))

    def _columns(self, columns: Sequence[str]) -> list[str]:
        unknown = sorted(set(columns) - set(self.schema.names))
        if unknown:
            raise ValueError(f"unknown columns {unknown}; the store has {self.schema.names}")
        return [name for name in columns if name != "language"]

    def _finish(
        self,
        table: pa.Table,
        language: str,
        columns: Sequence[str] | None,
        labelled_only: bool,
    ) -> pa.Table:
        if labelled_only:
            table = table.filter(pc.is_valid(table.column("label")))
        table = table.sort_by([("completed_at", "ascending"), ("conversation_id", "ascending")])
        language_column = pa.array([language] * table.num_rows, pa.string())
        table = table.append_column(self.schema.field("language"), language_column)
        return table.select(list(self.schema.names if columns is None else columns))


def most_complete_copies(table: pa.Table) -> pa.Table:
    """One row per conversation: the one built from the most `pieces` (unknown counts
    least), and among those the latest `ingested_at`."""
    return first_per_id(
        table, "conversation_id", [("pieces", "descending"), ("ingested_at", "descending")]
    )
