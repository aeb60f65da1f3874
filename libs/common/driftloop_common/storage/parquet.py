"""The partitioned-Parquet base of the interaction store and the feature tables.

Layout (Hive-style, readable by pyarrow, DuckDB, Spark…)::

    <root>/language=en-us/day=2026-11-24/part-20261124T200000123456-<uuid>.parquet

`day` is the UTC date of `completed_at`; `language` lives in the path only. Writers never
touch an existing file: each append writes one new, uniquely named file per partition, so
any number of writers can write at once. Readers list only the day folders of the window
they ask for (partition pruning), and de-duplicate by id: rows are never rewritten.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from driftloop_common.contracts.errors import PermanentError, RetryableError

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")


class PartitionedParquet:
    """Files of one store under `root` (a path or any fsspec URL, plus `folder` inside it).

    `clock` stamps `ingested_at` (injectable for tests and replays); `name` says which store
    an error is about.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        folder: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") + (f"/{folder}" if folder else "")
        self._clock = clock

    def _write(
        self, partitions: Iterable[tuple[tuple[str, str], pa.Table]], stamp: datetime
    ) -> list[str]:
        """One new file per ((language, day), table); returns their URLs."""
        prefix = stamp.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")
        written = []
        with self._storage_errors("write to"):
            for (language, day), table in partitions:
                folder = self._day_folder(language, day)
                path = f"{folder}/part-{prefix}-{uuid.uuid4().hex}.parquet"
                write_parquet(self.fs, table, folder, path)
                written.append(self.fs.unstrip_protocol(path))
        return written

    def _files_between(self, language: str, start: datetime, end: datetime) -> list[str]:
        """The files that can hold rows of `[start, end)`: those of its days only."""
        with self._storage_errors("read from"):
            return [f for day in day_partitions(start, end) for f in self._files(language, day)]

    def _day_folder(self, language: str, day: str) -> str:
        return f"{self.root}/language={language}/day={day}"

    def _files(self, language: str, day: str) -> list[str]:
        return sorted(self.fs.glob(f"{self._day_folder(language, day)}/*.parquet"))

    def _days_stored(self, language: str) -> list[str]:
        try:
            entries = self.fs.ls(f"{self.root}/language={language}", detail=False)
        except FileNotFoundError:
            return []
        names = (entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)
        return sorted(name.removeprefix("day=") for name in names if name.startswith("day="))

    @contextlib.contextmanager
    def _storage_errors(self, action: str) -> Iterator[None]:
        """Storage failures (network, permissions, full disk) may pass: retry later."""
        try:
            yield
        except OSError as exc:
            raise RetryableError(f"cannot {action} {self.name} at {self.url}: {exc}") from exc


def write_parquet(fs: Any, table: pa.Table, folder: str, path: str) -> None:
    """Write one new Parquet file that readers never see half-written.

    On a local disk it is written under a hidden temporary name (a leading dot hides it
    from pyarrow, Spark and our readers) and renamed; object stores publish an object only
    once its upload completes, so there it is written in place."""
    fs.makedirs(folder, exist_ok=True)
    if not isinstance(fs, LocalFileSystem):
        with fs.open(path, "wb") as f:
            pq.write_table(table, f)
        return
    tmp = f"{folder}/.{path.rsplit('/', 1)[1]}.tmp"
    try:
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def first_per_id(table: pa.Table, id_column: str, order_by: list[tuple[str, str]]) -> pa.Table:
    """One row per `id_column`: the first in `order_by`'s order (nulls sort last)."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, [(id_column, "ascending"), *order_by])
    ids = table.column(id_column).take(order).to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return table.take(order.filter(pa.array(first)))


def latest_copies(table: pa.Table, id_column: str) -> pa.Table:
    """One row per `id_column`: the one with the latest `ingested_at`."""
    return first_per_id(table, id_column, [("ingested_at", "descending")])


@contextlib.contextmanager
def data_errors(what: str) -> Iterator[None]:
    """What pyarrow raises about the values themselves (a string that is not valid
    Unicode, a number out of range) will never pass: `PermanentError`. Storage errors
    (`OSError`) pass through, for `_storage_errors`."""
    try:
        yield
    except OSError:
        raise
    except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
        raise PermanentError(f"{what} cannot be stored: {exc!r}"[:2000], code="unstorable") from exc


def language_tag(value: str) -> str:
    """The partition value: a lower-case BCP 47 tag (also keeps `/` and `..` out of paths)."""
    tag = value.strip().lower().replace("_", "-")
    if not _LANGUAGE.match(tag):
        raise PermanentError(
            f"language must be a BCP 47 tag such as 'en-us', got {value!r}", code="language"
        )
    return tag


def time_window(start: datetime, end: datetime) -> tuple[datetime, datetime, ds.Expression]:
    """`[start, end)` in UTC and as a filter on `completed_at`; `ValueError` for naive or
    reversed bounds."""
    start, end = aware_utc(start, "start"), aware_utc(end, "end")
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    return start, end, (ds.field("completed_at") >= start) & (ds.field("completed_at") < end)


def aware_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def day_partitions(start: datetime, end: datetime) -> list[str]:
    """The UTC days that rows of `[start, end)` can fall on."""
    if end <= start:
        return []
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
