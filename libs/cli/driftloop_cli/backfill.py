"""Months of synthetic history straight into the interaction store.

The trainer learns from 90 days of labelled interactions; streaming that much through
Kafka and the collector is slow for a demo or a test. `backfill_store` embeds the texts
with the same encoder the collector uses (each distinct text once) and appends the rows
exactly as the collector would, optionally leaving the newest rows unlabelled (traffic
whose wrap-up code has not arrived yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from driftloop_common.contracts.events import InteractionEmbedded
from driftloop_common.ml.encoder import TextEncoder
from driftloop_common.storage.interactions import InteractionStore
from driftloop_synthetic import Interaction


def backfill_store(
    store: InteractionStore,
    interactions: Iterable[Interaction],
    encoder: TextEncoder,
    *,
    unlabelled_from: datetime | None = None,
    batch_rows: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed and append `interactions`; rows completed at or after `unlabelled_from` are
    stored without a label. Returns the number of rows written."""
    info = encoder.info
    vectors: dict[str, list[float]] = {}
    pending: list[Interaction] = []
    written = 0

    def flush() -> None:
        nonlocal written
        new = sorted({i.text for i in pending if i.text not in vectors})
        if new:
            for text, vector in zip(new, encoder.encode(new), strict=True):
                vectors[text] = vector.tolist()
        store.append(
            InteractionEmbedded(
                conversation_id=i.conversation_id,
                language=i.language,
                completed_at=i.completed_at,
                embedding=vectors[i.text],
                encoder=info,
                label=None
                if unlabelled_from is not None and i.completed_at >= unlabelled_from
                else i.intent,
                text=i.text,
                queue=i.queue,
                media_type=i.media_type,
            )
            for i in pending
        )
        written += len(pending)
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for interaction in interactions:
        pending.append(interaction)
        if len(pending) >= batch_rows:
            flush()
    if pending:
        flush()
    return written
