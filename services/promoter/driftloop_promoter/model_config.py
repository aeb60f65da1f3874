"""The model-config API as a deploy target (`model-config`): the contract of the integration
guide this project started from. Genesys Cloud's public API has no such endpoints (no
`/api/v2/ml/…`); this adapter is for platforms that expose that contract, and the simulator
serves it for tests and local runs.

The contract: `POST /api/v2/ml/trainingdata` uploads one chunk of 10–50 interactions and
answers its `trainingDataId`; `PATCH /api/v2/ml/models/{modelId}` with `trainingDataId`,
`status` and `version` makes the model serve it. There is no call that groups chunks, so the
model is PATCHed with the first chunk's id, which heads the set (see `ModelConfigTarget`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import accumulate, pairwise

from pydantic import BaseModel, ConfigDict, Field

from driftloop_common.contracts.errors import ConfigError, GenesysApiError
from driftloop_common.genesys import GenesysClient
from driftloop_common.storage import registry
from driftloop_common.storage.interactions import InteractionStore
from driftloop_promoter.targets import DeployError, Promotion

log = logging.getLogger(__name__)

NAME = "model-config"
SPLITS = ("train", "validation")  # the rows a version learnt from

# What the target notes on the version (`Promotion.note`), per attempt.
ROWS, CHUNKS, TRAINING_DATA_ID, ACTIVATED = "rows", "chunks", "training_data_id", "activated"

Interaction = dict[str, str]


def chunk_key(i: int) -> str:
    return f"chunk.{i}"


class ModelConfigOptions(BaseModel):
    """How training data is uploaded (the promoter's settings carry them:
    `DRIFTLOOP_ML_UPLOAD__CHUNK_SIZE`, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_size: int = Field(default=50, ge=10, le=50)  # interactions per upload (the guide)
    concurrency: int = Field(default=4, ge=3, le=5)  # uploads at once (Genesys: 3–5 calls)


class ModelConfigTarget:
    """Uploads a version's training rows to the model-config API and makes the model serve
    them.

    `prepare` reads the labelled rows of the version's training and validation windows (its
    run's `train_start` … `validation_end`) from the interaction store, splits them into
    `ceil(n / chunk_size)` chunks of balanced sizes (never above `chunk_size`; with
    `chunk_size >= 20` and at least 10 rows, none under 10) and uploads them, `concurrency` at
    a time (the client adds its own cap and waits out 429s). Each chunk's `trainingDataId`
    is noted on the version as soon as its upload succeeds, and a noted chunk is never
    uploaded again: a crash or a redelivery uploads only the chunks that are missing. A chunk
    whose upload was in flight at the crash may be uploaded twice, at most; each body carries
    `chunkKey` (`<attempt>:v<version>:<i>`) and `chunkCount` so that a platform can dedupe.
    The row and chunk counts are noted before the first upload: a resume cuts the rows read
    again to that count, so the chunks keep their bounds (a row stored late inside a window
    may shift the tail by a row or two: never a duplicate chunk).

    The contract PATCHes a single `trainingDataId` and has no call that groups chunks (the
    simulator keeps each chunk under an id of its own), so the model is PATCHed with the
    first chunk's id, the head of the set; the others share its `chunkKey` prefix. That id
    is noted as `training_data_id` once every chunk is uploaded. A version whose upload was
    completed by an earlier attempt (a rollback to it, a switch back after a failed
    activation) reuses that id: the previous `trainingDataId` is PATCHed back, nothing is
    uploaded again.

    `activate` PATCHes the model `ACTIVE` with the id and the version number, then notes
    `activated`; when already noted it reads the model first and PATCHes only if it serves
    something else (a switch back to the previous champion happened in between).

    Genesys's refusals (`GenesysApiError`: a 4xx, a 501) become `DeployError` with its
    message and `contextId`; `RetryableError` passes through. The target owns `client`:
    `close` closes it.
    """

    name = NAME

    def __init__(
        self,
        client: GenesysClient,
        model_id: str,
        store_url: str,
        options: ModelConfigOptions | None = None,
    ) -> None:
        if not model_id:
            raise ConfigError("model-config needs a model id")
        self.client, self.model_id, self.store_url = client, model_id, store_url
        self.options = options or ModelConfigOptions()

    # ------------------------------------------------------------------ prepare

    async def prepare(self, promotion: Promotion) -> None:
        if promotion.noted(NAME, TRAINING_DATA_ID) is not None:
            return
        earlier = promotion.noted_by_any(NAME, TRAINING_DATA_ID)
        if earlier is not None:
            log.info(
                "%s v%s was uploaded before: reusing trainingDataId %s",
                promotion.name,
                promotion.number,
                earlier,
            )
            await promotion.note(NAME, TRAINING_DATA_ID, earlier)
            return
        rows = await self._rows(promotion)
        count = promotion.noted(NAME, CHUNKS)
        if count is None:  # the first pass, or a crash between noting the rows and this
            count = str(math.ceil(len(rows) / self.options.chunk_size))
            await promotion.note(NAME, CHUNKS, count)
        chunks = _split(rows, int(count))
        todo = [i for i in range(len(chunks)) if promotion.noted(NAME, chunk_key(i)) is None]
        log.info(
            "%s v%s: uploading %d of %d chunks to model %s",
            promotion.name,
            promotion.number,
            len(todo),
            len(chunks),
            self.model_id,
        )
        await self._upload_all(promotion, chunks, todo)
        head = promotion.noted(NAME, chunk_key(0))
        assert head is not None  # every chunk is noted once `_upload_all` returns
        await promotion.note(NAME, TRAINING_DATA_ID, head)

    async def _rows(self, promotion: Promotion) -> list[Interaction]:
        """The rows to upload; the first pass notes how many."""
        windows = await _windows(promotion)
        rows = await asyncio.to_thread(self._read, promotion.key.language, windows)
        if (text := promotion.noted(NAME, ROWS)) is None:
            if not rows:
                raise DeployError(NAME, "the version's windows hold no labelled rows to upload")
            await promotion.note(NAME, ROWS, str(len(rows)))
            return rows
        noted = int(text)
        if len(rows) < noted:
            raise DeployError(
                NAME,
                f"the version's rows changed while it was uploaded ({noted} then, "
                f"{len(rows)} now): promote it again",
            )
        if len(rows) > noted:
            log.warning(
                "%s v%s: %d rows now, %d when the upload began: resuming with the first %d",
                promotion.name,
                promotion.number,
                len(rows),
                noted,
                noted,
            )
        return rows[:noted]

    def _read(
        self, language: str, windows: Sequence[tuple[datetime, datetime]]
    ) -> list[Interaction]:
        store = InteractionStore(self.store_url)
        seen: set[str] = set()
        rows: list[Interaction] = []
        for start, end in windows:
            table = store.read(
                language,
                start,
                end,
                columns=["conversation_id", "text", "label"],
                labelled_only=True,
            )
            for conversation_id, text, label in zip(
                table.column("conversation_id").to_pylist(),
                table.column("text").to_pylist(),
                table.column("label").to_pylist(),
                strict=True,
            ):
                if conversation_id in seen:
                    continue
                seen.add(conversation_id)
                rows.append(
                    {"conversationId": conversation_id, "text": text or "", "label": str(label)}
                )
        return rows

    async def _upload_all(
        self, promotion: Promotion, chunks: list[list[Interaction]], todo: list[int]
    ) -> None:
        """Upload the chunks `todo` with `concurrency` workers; the first failure cancels
        the others and is raised as it is."""
        pending = iter(todo)  # shared: each chunk goes to one worker

        async def worker() -> None:
            for i in pending:
                await self._upload(promotion, i, chunks[i], len(chunks))

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.options.concurrency, len(todo))):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:
            first = failed.exceptions[0]
            raise first from first.__cause__

    async def _upload(
        self, promotion: Promotion, i: int, chunk: list[Interaction], count: int
    ) -> None:
        if promotion.noted(NAME, chunk_key(i)) is not None:
            return
        extra = {"chunkKey": f"{promotion.attempt}:v{promotion.number}:{i}", "chunkCount": count}
        with _refused(f"uploading chunk {i} of {count}"):
            training_data_id = await self.client.upload_training_data(
                self.model_id, chunk, extra=extra
            )
        await promotion.note(NAME, chunk_key(i), training_data_id)

    # ----------------------------------------------------------------- activate

    async def activate(self, promotion: Promotion) -> None:
        training_data_id = promotion.noted(NAME, TRAINING_DATA_ID)
        if training_data_id is None:
            raise DeployError(NAME, f"{promotion.name} v{promotion.number} was not prepared")
        version = str(promotion.number)
        if promotion.noted(NAME, ACTIVATED) is not None:
            with _refused(f"reading model {self.model_id}"):
                live = await self.client.get_model(self.model_id)
            if (live.training_data_id, live.status, live.version) == (
                training_data_id,
                "ACTIVE",
                version,
            ):
                return
        with _refused(f"activating model {self.model_id}"):
            await self.client.patch_model(
                self.model_id, training_data_id, status="ACTIVE", version=version
            )
        await promotion.note(NAME, ACTIVATED, training_data_id)

    async def close(self) -> None:
        await self.client.aclose()


@contextmanager
def _refused(doing: str) -> Iterator[None]:
    """Genesys's "never" (`GenesysApiError`: its message, details and contextId) as the
    target's `DeployError`; "later" (`RetryableError`) passes through."""
    try:
        yield
    except GenesysApiError as exc:
        raise DeployError(NAME, f"{doing}: {exc}") from exc


async def _windows(promotion: Promotion) -> list[tuple[datetime, datetime]]:
    doing = f"reading the run of {promotion.name} v{promotion.number}"
    with registry.translated(doing, uri=promotion.tracking_uri):
        run = await asyncio.to_thread(promotion.client.get_run, promotion.version.run_id)
    params = run.data.params
    windows = []
    for split in SPLITS:
        try:
            start = datetime.fromisoformat(params[f"{split}_start"])
            end = datetime.fromisoformat(params[f"{split}_end"])
        except (KeyError, ValueError) as exc:
            raise DeployError(
                NAME, f"the run of v{promotion.number} has no usable {split} window ({exc})"
            ) from exc
        windows.append((start, end))
    return windows


def _split(rows: list[Interaction], chunks: int) -> list[list[Interaction]]:
    """`rows` in `chunks` consecutive chunks whose sizes differ by one at most."""
    size, longer = divmod(len(rows), chunks)
    bounds = accumulate((size + (i < longer) for i in range(chunks)), initial=0)
    return [rows[a:b] for a, b in pairwise(bounds)]
