"""Micro-batching: concurrent requests gathered into one model call, as Triton's dynamic
batcher does.

One `Batcher` per loaded model version, one worker task per batcher. A request's texts
join the queue; the worker takes the first waiting request, then keeps gathering for at
most `batch_wait_ms` or until `max_batch_size` texts, and scores them all in one call on a
thread (the event loop keeps accepting requests meanwhile, and they form the next batch).
A request is never split: one larger than `max_batch_size` is a batch of its own.

`close()` lets the worker finish what is queued and exit; a request that still reaches a
closed batcher (it looked the model up just before a swap) is served all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BatchConfig", "Batcher", "Scored"]


class ModelFailedError(Exception):
    """The model raised on a batch; `str()` is the exception's type only (its message may
    quote the texts)."""


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=64, gt=0)  # texts per model call
    # How long a batch waits for company. 2 ms fills batches of 64 at 64 clients for 2 ms
    # more at one client; 5 ms costs a lone request 4 ms more, 0 halves the batches
    # (docs/benchmarks.md, "Predictor").
    batch_wait_ms: float = Field(default=2.0, ge=0)


@dataclass(frozen=True)
class Scored:
    labels: list[str]
    confidences: list[float]
    # Class probabilities, one row per text, columns in `classes` order (None: the model
    # gives only its best label).
    proba: np.ndarray | None = None
    classes: tuple[str, ...] = ()

    def rows(self, start: int, end: int) -> Scored:
        proba = None if self.proba is None else self.proba[start:end]
        return Scored(self.labels[start:end], self.confidences[start:end], proba, self.classes)


Score = Callable[[list[str]], Scored]
"""Scores texts in one call (blocking: it runs on a thread)."""


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[Scored]


class Batcher:
    def __init__(
        self,
        score: Score,
        config: BatchConfig,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._score = score
        self._config = config
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, texts: Sequence[str]) -> Scored:
        """The labels and confidences of `texts`, scored with whatever else is waiting."""
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(list(texts), future))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="predictor-batcher")
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the worker (a later `submit` restarts it)."""
        if self._worker is not None and not self._worker.done():
            self._queue.put_nowait(None)
            self._arrived.set()

    async def aclose(self) -> None:
        self.close()
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                if self._queue.empty():
                    return
                continue
            batch = [first]
            size = len(first.texts)
            closing = False
            deadline = asyncio.get_running_loop().time() + self._config.batch_wait_ms / 1000
            while size < self._config.max_batch_size:
                if self._queue.empty():
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0 or closing:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except TimeoutError:
                        break
                    continue
                item = self._queue.get_nowait()
                if item is None:
                    closing = True
                    continue
                batch.append(item)
                size += len(item.texts)
            await self._score_batch(batch, size)
            if closing and self._queue.empty():
                return

    async def _score_batch(self, batch: list[_Request], size: int) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            scored = await asyncio.to_thread(self._score, texts)
        except Exception as exc:  # the model's code is the user's: this is its one boundary
            failed = ModelFailedError(type(exc).__name__)
            failed.__cause__ = exc
            for request in batch:  # every request of the batch answers with the failure
                if not request.future.done():
                    request.future.set_exception(failed)
            return
        if self._on_batch is not None:
            self._on_batch(size)
        start = 0
        for request in batch:
            end = start + len(request.texts)
            if not request.future.done():  # the client may have gone
                request.future.set_result(scored.rows(start, end))
            start = end
