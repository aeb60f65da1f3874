"""The models this process serves: per registered model, the version live now.

A reload loads the new version on a thread while the old one keeps answering, then swaps
one reference (atomic for every request: a request holds the `Loaded` it looked up, so it
is answered by one version from start to end). The old version's batcher finishes what
it has queued and stops; nothing waits on the swap and nothing fails because of it.
Before the swap the new version is warmed up on the loading thread (`warm_up`, where the
model has one: a text version loads its encoder there, not on its first request), and a
version whose warm-up fails is not served: the old one stays.

The champion alias in the registry is the truth: an event only says "look again", so a
replayed or out-of-order `model.promoted` never brings back an old version.

A staged version (alias `shadow` or `canary`, see the promoter's rollout.py) is loaded
beside the champion. `canary`: it answers the conversations whose id hashes into its
share (the same conversation always gets the same version; a request without a
conversation id gets the champion). `shadow`: every request the champion answers is
scored again by it in the background; its answer is never returned, only reported
(`on_shadow`), so a slow or failing shadow costs the caller nothing.

Abstain (intent models, on per registered model): a version whose training chose a
confidence floor on validation (`abstain_floor`) answers `abstain_label` instead of its
best intent below that floor; the confidence stays the model's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import ModelKey, Stage
from driftloop_predictor.batching import BatchConfig, Batcher, ModelFailedError, Scored
from driftloop_predictor.scoring import call_model, is_tabular, score_records

__all__ = ["Loaded", "Loader", "ServedModels", "StagedVersion", "in_canary", "score_text"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedVersion:
    stage: Stage  # shadow or canary
    version: int
    share_percent: float = 0.0  # a canary's share of conversations


class Loader(Protocol):
    """Where versions come from (MLflow in production, a fake in tests). The calls block:
    they run on a thread."""

    def champion(self, name: str) -> int | None: ...

    def staged(self, name: str) -> StagedVersion | None: ...

    def load(self, name: str, version: int) -> Any: ...


def abstained(scored: Scored, floor: float, label: str) -> Scored:
    """`scored` with every answer below `floor` replaced by `label` (out of scope)."""
    labels = [
        label if c < floor else best
        for best, c in zip(scored.labels, scored.confidences, strict=True)
    ]
    return dataclasses.replace(scored, labels=labels)


def abstain_floor(model: Any) -> float:
    """The floor a version's training chose (0: none; versions before it had none)."""
    floor = getattr(model, "abstain_floor", 0.0)
    return float(floor) if isinstance(floor, int | float) and 0 < floor < 1 else 0.0


def in_canary(name: str, conversation_id: str, share_percent: float) -> bool:
    """Whether a conversation falls in a canary's share: a stable hash (the same in every
    process and restart), so a conversation keeps its version for the whole stage."""
    digest = hashlib.blake2b(f"{name}/{conversation_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < share_percent * 100


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
    stage: Stage = "champion"
    share_percent: float = 0.0
    # Called after each answer with its inputs (the champion's: to score them in shadow).
    after: Callable[[Loaded, list[Any], Scored], None] | None = field(default=None, repr=False)

    async def score(self, texts: list[Any]) -> Scored:
        scored = await self.batcher.submit(texts)
        if self.after is not None:
            self.after(self, texts, scored)
        return scored


OnShadow = Callable[[Loaded, Loaded, Scored, Scored], None]
"""(shadow, champion, the shadow's answer, the champion's answer) after a shadow scoring."""


class ServedModels:
    def __init__(
        self,
        keys: Iterable[ModelKey],
        loader: Loader,
        batching: BatchConfig,
        on_batch: Callable[[ModelKey, int], None] | None = None,
        on_shadow: OnShadow | None = None,
        abstain: Collection[str] = (),
        abstain_label: str = "out_of_scope",
    ) -> None:
        self.keys = {key.registered_model: key for key in keys}
        self.abstain, self.abstain_label = frozenset(abstain), abstain_label
        self.loader = loader
        self.batching = batching
        self.on_batch = on_batch
        self.on_shadow = on_shadow
        self._live: dict[str, Loaded] = {}
        self._staged: dict[str, Loaded] = {}
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._locks = {name: asyncio.Lock() for name in self.keys}

    def key_of(self, name: str) -> ModelKey | None:
        return self.keys.get(name)

    def live(self, name: str, conversation_id: str | None = None) -> Loaded | None:
        """The version that answers: the champion, or a canary for its conversations."""
        staged = self._staged.get(name)
        if (
            staged is not None
            and staged.stage == "canary"
            and conversation_id
            and in_canary(name, conversation_id, staged.share_percent)
        ):
            return staged
        return self._live.get(name)

    def staged(self, name: str) -> Loaded | None:
        return self._staged.get(name)

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
            if version is not None and (current is None or current.version != version):
                model = await self._ready(name, version)
                self.swap(key, version, model)
            await self._refresh_staged(key)
            return self._live.get(name)

    async def _refresh_staged(self, key: ModelKey) -> None:
        """Load, move or drop the staged version to match the registry's stage aliases."""
        name = key.registered_model
        wanted = await asyncio.to_thread(self.loader.staged, name)
        current = self._staged.get(name)
        if wanted is None or wanted.version == getattr(self._live.get(name), "version", None):
            if current is not None:
                del self._staged[name]
                current.batcher.close()
                log.info("%s: the %s v%s stage ended", name, current.stage, current.version)
            return
        if current is not None and current.version == wanted.version:
            if (current.stage, current.share_percent) != (wanted.stage, wanted.share_percent):
                self._staged[name] = self._made(
                    key, wanted.version, current.model, wanted.stage, wanted.share_percent
                )
                current.batcher.close()
                log.info("%s v%s is now %s", name, wanted.version, wanted.stage)
            return
        model = await self._ready(name, wanted.version)
        self._staged[name] = self._made(
            key, wanted.version, model, wanted.stage, wanted.share_percent
        )
        if current is not None:
            current.batcher.close()
        log.info("%s v%s serves as %s", name, wanted.version, wanted.stage)

    async def _ready(self, name: str, version: int) -> Any:
        """Version `version` loaded and warmed up, both on a thread; `PermanentError`
        (`model_failed`) when its warm-up raises."""
        model = await asyncio.to_thread(self.loader.load, name, version)
        warm_up = getattr(model, "warm_up", None)
        if callable(warm_up):
            try:
                await call_model(warm_up)
            except ModelFailedError as exc:
                raise PermanentError(
                    f"{name} v{version} failed its warm-up ({exc}); it is not served",
                    code="model_failed",
                ) from exc
        return model

    def swap(self, key: ModelKey, version: int, model: Any) -> Loaded:
        """Make `model` (version `version` of `key`) the live one; the old one drains."""
        name = key.registered_model
        loaded = self._made(key, version, model, "champion", 0.0)
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

    def _made(self, key: ModelKey, version: int, model: Any, stage: Stage, share: float) -> Loaded:
        def count(size: int) -> None:
            if self.on_batch is not None:
                self.on_batch(key, size)

        score = score_records if is_tabular(key.model_type) else score_text
        floor = abstain_floor(model) if key.registered_model in self.abstain else 0.0
        label = self.abstain_label

        def scored(inputs: list[Any]) -> Scored:
            answer = score(model, inputs)
            return abstained(answer, floor, label) if floor > 0 else answer

        batcher = Batcher(scored, self.batching, count)
        after = self._shadow_after if stage == "champion" else None
        return Loaded(key, key.registered_model, version, model, batcher, stage, share, after)

    def _shadow_after(self, champion: Loaded, inputs: list[Any], answer: Scored) -> None:
        """After the champion answered: the shadow scores the same inputs, off the path."""
        shadow = self._staged.get(champion.name)
        if shadow is None or shadow.stage != "shadow":
            return
        task = asyncio.get_running_loop().create_task(
            self._score_shadow(shadow, champion, list(inputs), answer)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _score_shadow(
        self, shadow: Loaded, champion: Loaded, inputs: list[Any], answer: Scored
    ) -> None:
        try:
            scored = await shadow.batcher.submit(inputs)
        except ModelFailedError as exc:  # the shadow's failure is reported, never raised
            log.warning("%s v%s (shadow) failed on a batch: %s", shadow.name, shadow.version, exc)
            return
        if self.on_shadow is not None:
            self.on_shadow(shadow, champion, scored, answer)

    async def shadows_scored(self) -> None:
        """Wait for the shadow scorings under way (tests, and a graceful stop)."""
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        for loaded in [*self._live.values(), *self._staged.values()]:
            await loaded.batcher.aclose()
