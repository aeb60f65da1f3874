"""The labelled rows a version learnt from and was tested on, read back from the store by
the windows its run recorded (`train_start` … `test_end`): what a Genesys-hosted model is
trained with, and what its shadow check detects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.storage import registry
from driftloop_common.storage.interactions import InteractionStore
from driftloop_promoter.targets import Promotion


@dataclass(frozen=True)
class Rows:
    texts: list[str]
    labels: list[str]

    def by_label(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for text, label in zip(self.texts, self.labels, strict=True):
            grouped.setdefault(label, []).append(text)
        return grouped


async def version_rows(promotion: Promotion, store_url: str, *splits: str) -> Rows:
    """The labelled rows of `splits` (`train`, `validation`, `test`) of the version's run,
    oldest first."""
    params = await _params(promotion)
    parts = [_read(store_url, promotion.key.language, params, split) for split in splits]
    read = await asyncio.gather(*(asyncio.to_thread(part) for part in parts))
    return Rows(
        [text for rows in read for text in rows.texts],
        [label for rows in read for label in rows.labels],
    )


async def _params(promotion: Promotion) -> dict[str, str]:
    name, number = promotion.name, promotion.number
    with registry.translated(f"reading the run of {name} v{number}", uri=promotion.tracking_uri):
        run = await asyncio.to_thread(promotion.client.get_run, promotion.version.run_id)
    return dict(run.data.params)


def _read(store_url: str, language: str, params: dict[str, str], split: str):
    try:
        start = datetime.fromisoformat(params[f"{split}_start"])
        end = datetime.fromisoformat(params[f"{split}_end"])
    except KeyError as exc:
        raise PermanentError(
            f"the version's run lacks the parameter {exc} (not a driftloop run?)",
            code="not_driftloop_run",
        ) from exc

    def read() -> Rows:
        table = InteractionStore(store_url).read(
            language, start, end, columns=["text", "label"], labelled_only=True
        )
        texts = ["" if t is None else t for t in table.column("text").to_pylist()]
        return Rows(texts, [str(label) for label in table.column("label").to_pylist()])

    return read
