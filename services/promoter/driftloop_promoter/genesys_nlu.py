"""A Genesys Cloud NLU domain as a deploy target (Genesys-hosted intent models).

`prepare` builds a draft domain version from the utterances the model version learnt from
(its train and validation rows, per intent), trains it, waits for the training (bounded),
and gates it: the report's `f1_score` must reach a floor, and `detect` on the newest
labelled test rows must agree with the labels at least as well as the domain's published
version does. `activate` publishes the draft. Every step is noted on the MLflow version
first (the draft's id before anything is put into it), so a crash or a redelivery resumes
the same draft instead of building another.

A `PUT` replaces a whole version (Genesys's semantics), and a request body must stay well
under Genesys's ~512 KiB limit: the draft carries at most `max_utterances` utterances per
intent, fewer (evenly spread over the rows) when the body would not fit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from driftloop_common.contracts.errors import GenesysApiError
from driftloop_common.genesys import GenesysClient
from driftloop_common.genesys.batching import DEFAULT_BODY_LIMIT, body_size
from driftloop_common.genesys.models import (
    NluDomainVersion,
    NluIntent,
    NluSegment,
    NluUtterance,
)
from driftloop_promoter.rows import Rows, version_rows
from driftloop_promoter.targets import DeployError, Promotion

NAME = "genesys-nlu"
_NEVER = datetime.min.replace(tzinfo=UTC)


class GenesysNluOptions(BaseModel):
    """How a domain version is built, waited for and gated (the promoter's settings carry
    them: `DRIFTLOOP_GENESYS_NLU__F1_FLOOR`, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    f1_floor: float = Field(default=0.7, ge=0, le=1)  # of the domain version's report
    shadow_rows: int = Field(default=200, gt=0)  # newest labelled test rows detected
    max_utterances: int = Field(default=200, gt=0)  # per intent
    train_timeout_s: float = Field(default=900.0, gt=0)
    poll_s: float = Field(default=2.0, gt=0)
    body_limit: int = Field(default=DEFAULT_BODY_LIMIT, gt=0)  # bytes of one request body


class GenesysNluTarget:
    name = NAME

    def __init__(
        self,
        client: GenesysClient,
        domain_id: str,
        store_url: str,
        options: GenesysNluOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.domain, self.store_url = client, domain_id, store_url
        self.options = options or GenesysNluOptions()
        self._clock = clock

    async def prepare(self, promotion: Promotion) -> None:
        with _refused(self.name):
            draft = await self._draft(promotion)
            if draft.published:
                return  # published by an earlier run of this attempt: nothing left to prepare
            if promotion.noted(self.name, "uploaded") is None:
                rows = await version_rows(promotion, self.store_url, "train", "validation")
                if not rows.texts:
                    raise DeployError(self.name, "the version's windows hold no labelled rows")
                body = self.version_body(promotion, rows)
                await self.client.update_version(self.domain, _id(draft), body)
                count = sum(len(intent.utterances) for intent in body.intents)
                await promotion.note(self.name, "uploaded", str(count))
                draft = await self.client.get_version(self.domain, _id(draft))
            if draft.training_status in (None, "Untrained"):
                await self.client.train_version(self.domain, _id(draft))
            draft = await self._trained(_id(draft))
            if promotion.gated and promotion.noted(self.name, "gated") is None:
                await self._gate(promotion, _id(draft))
                await promotion.note(self.name, "gated", "passed")

    async def activate(self, promotion: Promotion) -> None:
        with _refused(self.name):
            draft = await self._draft(promotion)
            if not draft.published:
                try:
                    await self.client.publish_version(self.domain, _id(draft))
                except GenesysApiError as exc:
                    if exc.status != 409:  # 409: published meanwhile (a retried call)
                        raise
            await promotion.note(self.name, "published", _id(draft))

    async def close(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------- the steps

    async def _draft(self, promotion: Promotion) -> NluDomainVersion:
        """This attempt's draft: the one noted, else a new one (noted before use)."""
        noted = promotion.noted(self.name, "draft_version_id")
        if noted is not None:
            return await self.client.get_version(self.domain, noted)
        created = await self.client.create_version(
            self.domain,
            NluDomainVersion(
                language=promotion.key.language,
                description=f"{promotion.name} v{promotion.number} (driftloop)",
            ),
        )
        await promotion.note(self.name, "draft_version_id", _id(created))
        return created

    def version_body(self, promotion: Promotion, rows: Rows) -> NluDomainVersion:
        """The draft's intents with their utterances, as many per intent as fit."""
        by_label = rows.by_label()
        per_intent = self.options.max_utterances
        while True:
            body = NluDomainVersion(
                language=promotion.key.language,
                description=f"{promotion.name} v{promotion.number} (driftloop)",
                intents=[
                    NluIntent(
                        name=label,
                        utterances=[
                            NluUtterance(segments=[NluSegment(text=text)])
                            for text in _spread(texts, per_intent)
                        ],
                    )
                    for label, texts in sorted(by_label.items())
                ],
            )
            if body_size(body) <= self.options.body_limit or per_intent == 1:
                return body
            per_intent = max(1, int(per_intent * 0.8))

    async def _trained(self, version_id: str) -> NluDomainVersion:
        deadline = self._clock() + self.options.train_timeout_s
        while True:
            version = await self.client.get_version(self.domain, version_id)
            if version.training_status == "Trained":
                return version
            if version.training_status == "Error":
                raise DeployError(self.name, f"the training of domain version {version_id} failed")
            if self._clock() > deadline:
                raise DeployError(
                    self.name,
                    f"domain version {version_id} still {version.training_status} after "
                    f"{self.options.train_timeout_s:.0f} s",
                )
            await asyncio.sleep(self.options.poll_s)

    async def _gate(self, promotion: Promotion, version_id: str) -> None:
        report = await self.client.report(self.domain, version_id)
        f1 = report.metric("f1_score")
        if f1 is None or f1 < self.options.f1_floor:
            raise DeployError(
                self.name,
                f"the domain version's report f1_score {f1} is below {self.options.f1_floor}",
            )
        test = await version_rows(promotion, self.store_url, "test")
        texts, labels = (
            test.texts[-self.options.shadow_rows :],
            test.labels[-self.options.shadow_rows :],
        )
        if not texts:
            return
        noted = promotion.noted(self.name, "shadow_agreement")  # a retry does not detect twice
        if noted is not None:
            agreement = float(noted)
        else:
            agreement = await self._agreement(version_id, texts, labels, promotion.key.language)
            await promotion.note(self.name, "shadow_agreement", f"{agreement:.4f}")
        live = await self._published(version_id)
        if live is None:
            return
        before = await self._agreement(live, texts, labels, promotion.key.language)
        if agreement < before:
            raise DeployError(
                self.name,
                f"detect agrees with {agreement:.1%} of the newest test labels, the published "
                f"version {live} with {before:.1%}",
            )

    async def _agreement(
        self, version_id: str, texts: list[str], labels: list[str], language: str
    ) -> float:
        async def top(text: str) -> str | None:
            intents = await self.client.detect(self.domain, version_id, text, language)
            return max(intents, key=lambda i: i.probability).name if intents else None

        # A task group: when one call fails for good, the others stop with it instead of
        # running on after the promotion has given up (the client still caps calls in flight).
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(top(text)) for text in texts]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the error itself: retryable, or a refusal
        found = [task.result() for task in tasks]
        return sum(f == label for f, label in zip(found, labels, strict=True)) / len(texts)

    async def _published(self, other_than: str) -> str | None:
        """The domain's newest published version (the live one), if any."""
        versions = await self.client.list_versions(self.domain, published_only=True)
        live = [v for v in versions if v.published and v.id and v.id != other_than]
        live.sort(key=lambda v: v.date_published or v.date_created or _NEVER, reverse=True)
        return live[0].id if live else None


def _spread(texts: list[str], n: int) -> list[str]:
    """At most `n` of `texts`, evenly spread over them (old and new rows alike)."""
    if len(texts) <= n:
        return texts
    step = len(texts) / n
    return [texts[int(i * step)] for i in range(n)]


def _id(version: NluDomainVersion) -> str:
    if not version.id:
        raise DeployError(NAME, "Genesys answered a domain version without an id")
    return version.id


@contextlib.contextmanager
def _refused(target: str) -> Iterator[None]:
    """A Genesys 4xx that a step does not handle refuses this version here for good."""
    try:
        yield
    except GenesysApiError as exc:
        context = f" (contextId {exc.context_id})" if exc.context_id else ""
        raise DeployError(target, f"Genesys answered {exc.status}: {exc}{context}") from exc
