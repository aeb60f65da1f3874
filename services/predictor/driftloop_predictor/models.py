"""The models this process serves: per registered model, the version live now.

A reload loads the new version on a thread while the old one keeps answering, then swaps
one reference (atomic for every request: a request holds the `Loaded` it looked up, so it
is answered by one version from start to end). The old version's batcher finishes what
it has queued and stops; nothing waits on the swap and nothing fails because of it.

The champion alias in the registry is the truth: an event only says "look again", so a
replayed or out-of-order `model.promoted` never brings back an old version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from driftloop_common.contracts.events import ModelKey
from driftloop_predictor.batching import BatchConfig, Batcher, Scored

__all__ = ["Loaded", "Loader", "ServedModels", "score_text"]

log = logging.getLogger(__name__)


class Loader(Protocol):
    """Where versions come from (MLflow in production, a fake in tests). Both calls block:
    they run on a thread."""

    def champion(self, name: str) -> int | None: ...

    def load(self, name: str, version: int) -> Any: ...


def score_text(model: Any, texts: list[str]) -> Scored:
    """A `TextClassifier`-shaped model on raw texts: its class probabilities when it gives
    them (`predict_proba(texts)` and `labels`, for top-k), else `predict(context, texts)`
    → a frame with `label` and `confidence`."""
    if callable(getattr(model, "predict_proba", None)) and hasattr(model, "labels"):
        classes = tuple(str(label) for label in model.labels)
        proba = np.nan_to_num(np.asarray(model.predict_proba(texts), dtype=np.float64))
        if proba.shape != (len(texts), len(classes)):
            raise RuntimeError(f"the model answered {proba.shape} for {len(texts)} texts")
        best = proba.argmax(axis=1)
        confidences = np.clip(proba[np.arange(len(texts)), best], 0.0, 1.0)
        return Scored([classes[i] for i in best], confidences.tolist(), proba, classes)
    frame = model.predict(None, texts)
    labels = [str(label) for label in frame["label"].tolist()]
    confidences = np.clip(np.nan_to_num(frame["confidence"].to_numpy(float)), 0, 1).tolist()
    if len(labels) != len(texts):
        raise RuntimeError(f"the model answered {len(labels)} rows for {len(texts)} texts")
    return Scored(labels, confidences)


@dataclass(frozen=True)
class Loaded:
    key: ModelKey
    name: str
    version: int
    model: Any
    batcher: Batcher

    async def score(self, texts: list[str]) -> Scored:
        return await self.batcher.submit(texts)


class ServedModels:
    def __init__(
        self,
        keys: Iterable[ModelKey],
        loader: Loader,
        batching: BatchConfig,
        on_batch: Callable[[ModelKey, int], None] | None = None,
    ) -> None:
        self.keys = {key.registered_model: key for key in keys}
        self.loader = loader
        self.batching = batching
        self.on_batch = on_batch
        self._live: dict[str, Loaded] = {}
        self._locks = {name: asyncio.Lock() for name in self.keys}

    def key_of(self, name: str) -> ModelKey | None:
        return self.keys.get(name)

    def live(self, name: str) -> Loaded | None:
        return self._live.get(name)

    def all_loaded(self) -> bool:
        return all(name in self._live for name in self.keys)

    async def refresh(self, key: ModelKey, hint: int | None = None) -> Loaded | None:
        """Serve `key`'s champion: load it beside the live version and swap. `hint` (the
        version an event names) is used only when the registry has no champion alias."""
        name = key.registered_model
        if name not in self.keys:
            return None
        async with self._locks[name]:  # one reload per model at a time, in event order
            version = await asyncio.to_thread(self.loader.champion, name)
            version = version if version is not None else hint
            current = self._live.get(name)
            if version is None or (current is not None and current.version == version):
                return current
            model = await asyncio.to_thread(self.loader.load, name, version)
            self.swap(key, version, model)
            return self._live[name]

    def swap(self, key: ModelKey, version: int, model: Any) -> Loaded:
        """Make `model` (version `version` of `key`) the live one; the old one drains."""
        name = key.registered_model

        def count(size: int) -> None:
            if self.on_batch is not None:
                self.on_batch(key, size)

        loaded = Loaded(
            key, name, version, model, Batcher(lambda t: score_text(model, t), self.batching, count)
        )
        old = self._live.get(name)
        self._live[name] = loaded
        if old is not None:
            old.batcher.close()
        log.info(
            "%s now serves v%s%s",
            name,
            version,
            f" (was v{old.version})" if old is not None else "",
        )
        return loaded

    async def aclose(self) -> None:
        for loaded in self._live.values():
            await loaded.batcher.aclose()
