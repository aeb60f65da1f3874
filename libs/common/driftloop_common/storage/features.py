"""Feature tables (lead scoring and other tabular models) as Parquet on any fsspec URL.

Layout, next to the interaction store's folders::

    <url>/tables/<table>/language=en-us/day=2026-11-24/part-20261124T200000123456-<uuid>.parquet

The layout and write rules of `storage.parquet`, as the interaction store has them;
`read` adds `language` back; every read de-duplicates by the table's id column, keeping
the row with the latest `ingested_at`, which `append` stamps.

A table has no fixed schema: the columns are the DataFrame's (with their pandas dtypes
kept in the Parquet metadata). Files written with different columns are read together,
a column missing from a file reads as null there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.storage.parquet import (
    PartitionedParquet,
    language_tag,
    latest_copies,
    time_window,
)

_TABLE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_UTC_US = pa.timestamp("us", tz="UTC")


class FeatureTableStore(PartitionedParquet):
    """Append and read the rows of one feature table under `url` (a path or fsspec URL).

    Every row needs `id_column`, `language` and a timezone-aware `completed_at`.
    `clock` stamps `ingested_at` (injectable for tests and replays).
    """

    def __init__(
        self,
        url: str,
        table: str = "leads",
        *,
        id_column: str = "lead_id",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if not _TABLE.match(table):
            raise ValueError(f"table must match {_TABLE.pattern}, got {table!r}")
        super().__init__(
            url,
            name=f"the feature table {table}",
            folder=f"tables/{table}",
            clock=clock,
            storage_options=storage_options,
        )
        self.table = table
        self.id_column = id_column

    # ------------------------------------------------------------------ write

    def append(self, frame: pd.DataFrame) -> list[str]:
        """Store `frame`'s rows: one new Parquet file per (language, day); returns their URLs.

        An id that appears twice in `frame` is stored once (the last row wins); an
        `ingested_at` column in `frame` is replaced by this call's stamp. Raises
        `PermanentError` for rows that can never be stored (a required column missing,
        a null id, a naive `completed_at`, a bad language tag, a column Parquet cannot
        hold) and `RetryableError` when the storage fails. Calling it again after a
        failure is safe: reads de-duplicate.
        """
        if frame.empty:
            return []
        rows = self._checked(frame).drop_duplicates(self.id_column, keep="last")
        ingested_at = self._clock().astimezone(UTC)
        rows["ingested_at"] = pd.Series(ingested_at, index=rows.index).astype("datetime64[us, UTC]")
        days = rows["completed_at"].dt.strftime("%Y-%m-%d")
        parts = rows.groupby([rows["language"], days], sort=True)
        return self._write(
            (((str(language), str(day)), self._arrow(part)) for (language, day), part in parts),
            ingested_at,
        )

    def _checked(self, frame: pd.DataFrame) -> pd.DataFrame:
        for column in (self.id_column, "language", "completed_at"):
            if column not in frame.columns:
                raise PermanentError(
                    f"table {self.table}: column {column!r} is missing", code="missing_column"
                )
        if frame[self.id_column].isna().any():
            raise PermanentError(
                f"table {self.table}: {self.id_column} is null in some rows", code="null_id"
            )
        completed = frame["completed_at"]
        if not isinstance(completed.dtype, pd.DatetimeTZDtype):
            raise PermanentError(
                f"table {self.table}: completed_at must be timezone-aware datetimes, "
                f"got dtype {completed.dtype}",
                code="naive_time",
            )
        rows = frame.copy()
        rows["completed_at"] = completed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        rows["language"] = [language_tag(str(value)) for value in rows["language"]]
        return rows

    def _arrow(self, part: pd.DataFrame) -> pa.Table:
        part = part.drop(columns="language")
        # pyarrow reads a tz-aware column through a path pandas 3 deprecates: hand it naive
        # UTC values and put the zone back on the Arrow side.
        aware = [c for c in part.columns if isinstance(part[c].dtype, pd.DatetimeTZDtype)]
        for column in aware:
            part[column] = part[column].dt.tz_convert("UTC").dt.tz_localize(None)
        try:
            table = pa.Table.from_pandas(part, preserve_index=False)
            for column in aware:
                i = table.schema.get_field_index(column)
                unit = table.schema.field(i).type.unit
                zoned = table.column(i).cast(pa.timestamp(unit, tz="UTC"))
                table = table.set_column(i, pa.field(column, zoned.type), zoned)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise PermanentError(
                f"table {self.table}: rows cannot be stored as Parquet: {exc}", code="schema"
            ) from exc
        # Sorted rows give tight row-group statistics for time filters.
        return table.sort_by("completed_at")

    # ------------------------------------------------------------------- read

    def read(self, language: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows of `language` with `start <= completed_at < end`, oldest first.

        Columns: the id, `language`, `completed_at`, the table's other columns, then
        `ingested_at`; the index is a fresh RangeIndex. Raises `ValueError` for naive or
        reversed bounds, `PermanentError` when stored files disagree on a column's type.
        """
        start, end, window = time_window(start, end)
        language = language_tag(language)
        files = self._files_between(language, start, end)
        with self._storage_errors("read from"):
            table = self._scan(files, window)
        table = table.sort_by([("completed_at", "ascending"), (self.id_column, "ascending")])
        frame = table.to_pandas()
        frame.insert(1, "language", pd.Series([language] * len(frame), dtype="str"))
        return frame

    def _scan(self, files: list[str], window: ds.Expression) -> pa.Table:
        if not files:
            return pa.table(
                {
                    self.id_column: pa.array([], pa.string()),
                    "completed_at": pa.array([], _UTC_US),
                    "ingested_at": pa.array([], _UTC_US),
                }
            )
        schemas = [pq.read_schema(f, filesystem=self.fs) for f in files]
        try:
            schema = pa.unify_schemas(schemas)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise PermanentError(
                f"table {self.table}: stored files disagree on a column's type: {exc}",
                code="schema",
            ) from exc
        first = [self.id_column, "completed_at"]
        names = [*first, *(n for n in schema.names if n not in {*first, "ingested_at"})]
        schema = pa.schema([schema.field(n) for n in [*names, "ingested_at"]], schema.metadata)
        dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs)
        return latest_copies(dataset.to_table(filter=window), self.id_column)
