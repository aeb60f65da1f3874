"""Promotions and rollbacks, recorded in MLflow and resumable at every step.

A passed `model.evaluated` for version v:
1. v already holds the alias `champion` → this is a redelivery after the alias moved: the
   same `model.promoted` is published again (its id derives from the evaluation's);
   v was rolled back once, or an evaluation of an older version arrives late → skipped
   (an audit event says why);
2. `prepare` on every target, then `activate` on every target (see `targets.py`);
3. the commit point: the alias `champion` moves to v; v is tagged `champion` with the
   version it replaced, that one `inactive` (kept, never deleted);
4. `model.promoted` and audit events, with ids derived from the evaluation's.
A target's `DeployError` ends in `promotion.failed` naming the target; the previous
champion stays live everywhere (the targets already activated are switched back).

With stages configured (`rollout.py`), step 2 waits: the version serves as `shadow`, then
`canary`, and `advance` (called by the service's flush) runs steps 2–4 once its time is up.

`rollback.requested` puts the previous champion (or `to_version`) back on every target,
moves the alias, tags the version taken back `rolled_back` (never promoted again on its
own) and publishes `model.rolled_back`. A rollback that was already done (a redelivery)
publishes the same `model.rolled_back` again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    Audit,
    AuditEvent,
    Event,
    ModelEvaluatedEvent,
    ModelPromoted,
    ModelPromotedEvent,
    ModelRolledBack,
    ModelRolledBackEvent,
    PromotionFailed,
    PromotionFailedEvent,
    RollbackRequestedEvent,
    Stage,
)
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag
from driftloop_promoter.rollout import ENDED, RolloutOptions, StagedFrom, held_stage
from driftloop_promoter.targets import DeployError, Promotion, Target

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)
SERVICE = "promoter"

INACTIVE, CHAMPION, ROLLED_BACK = "inactive", "champion", "rolled_back"


class Promoter:
    """Moves versions live and back. `targets_of(key)` names a model key's targets, and
    `target(name)` builds one (the predictor, a Genesys NLU domain, the model-config API)."""

    def __init__(
        self,
        tracking_uri: str,
        targets_of: Callable[[Any], list[str]],
        target: Callable[[str, Any], Target],
        *,
        registry_uri: str | None = None,
        rollout: RolloutOptions | None = None,
    ) -> None:
        self.uri = tracking_uri
        self.client = registry.client(tracking_uri, registry_uri)
        self.targets_of = targets_of
        self.target = target
        self.rollout = rollout or RolloutOptions()

    # ------------------------------------------------------------- promotion

    async def promote(self, event: ModelEvaluatedEvent, *, staged: bool = True) -> list[Event]:
        """`staged=False`: the last step of a staged promotion (no stage again)."""
        p = event.payload
        if not p.passed:
            return []
        name = event.model_key.registered_model
        if p.registered_model != name:
            raise PermanentError(
                f"model.evaluated for {event.model_key} names {p.registered_model!r}",
                code="model_mismatch",
            )
        version = await self._version(name, p.version)
        champion = await self._champion(name)
        if champion is not None and champion.version == version.version:
            return [self._promoted(event, version, champion_before(version))]
        if version.tags.get(Tag.STATUS) == ROLLED_BACK:
            return [self._audit(event, "promotion.skipped", name, f"v{p.version} was rolled back")]
        if champion is not None and int(champion.version) > p.version:
            why = f"v{p.version} is older than the champion v{champion.version}"
            return [self._audit(event, "promotion.skipped", name, why)]
        if staged and champion is not None and self.rollout.staged:
            return await self._stage(event, version)
        promotion = Promotion(
            event.model_key, version, champion, str(event.event_id), self.client, self.uri
        )
        targets = [self.target(t, event.model_key) for t in self.targets_of(event.model_key)]
        steps: list[str] = []
        try:
            await self._deploy(promotion, targets, steps)
        except DeployError as exc:
            log.warning("%s v%s not promoted: %s", name, p.version, exc)
            failed = self._failed(event, name, p.version, exc, "promotion.failed")
            return self._steps(event, name, f"v{p.version}", steps) + failed
        finally:
            await asyncio.gather(*(t.close() for t in targets))
        await self._make_champion(version, champion)
        log.info("%s v%s is champion (was %s)", name, p.version, _v(champion))
        return [
            *self._steps(event, name, f"v{p.version}", steps),
            self._promoted(event, version, int(champion.version) if champion else None),
            self._audit(event, "model.promoted", name, f"v{p.version} (was {_v(champion)})"),
        ]

    async def _deploy(
        self, promotion: Promotion, targets: Sequence[Target], steps: list[str]
    ) -> None:
        """Prepare on every target, then activate on every target; `steps` collects what
        was done (each becomes an audit event), a failure included."""
        for target in targets:
            await target.prepare(promotion)
            steps.append(f"{target.name}.prepared")
        activated: list[Target] = []
        try:
            for target in targets:
                await target.activate(promotion)
                activated.append(target)
                steps.append(f"{target.name}.activated")
        except DeployError:
            if promotion.previous is not None:  # put the champion back where it was replaced
                back = Promotion(
                    promotion.key,
                    promotion.previous,
                    None,
                    f"{promotion.attempt}-restore",
                    self.client,
                    self.uri,
                    gated=False,
                )
                for target in activated:
                    await target.prepare(back)
                    await target.activate(back)
                    steps.append(f"{target.name}.restored")
            raise

    def _promoted(
        self, event: ModelEvaluatedEvent, version: ModelVersion, previous: int | None
    ) -> ModelPromotedEvent:
        measured = event.payload.metrics  # what the rollback-watcher compares live traffic with
        payload = ModelPromoted(
            registered_model=version.name,
            version=int(version.version),
            previous_version=previous,
            targets=self.targets_of(event.model_key),
            confidence_at_promotion=measured.get("confidence"),
            expected_accuracy=measured.get("challenger_accuracy"),
        )
        return event.follow_up(ModelPromotedEvent, producer=SERVICE, payload=payload)

    # ---------------------------------------------------------------- stages

    async def _stage(self, event: ModelEvaluatedEvent, version: ModelVersion) -> list[Event]:
        """Put `version` in the first stage; a newer one replaces a version still staged."""
        name = version.name
        held = held_stage(version.tags, Tag.STAGE)
        if held is not None:  # a redelivery: the stage began already
            return [self._staged(event, version, held)]
        if version.tags.get(Tag.STAGE) == ENDED:  # superseded by a newer version
            why = f"v{version.version} left its stage already"
            return [self._audit(event, "promotion.skipped", name, why)]
        events: list[Event] = []
        for other in await self._call(
            f"reading the staged versions of {name}", registry.staged_versions, self.client
        ):
            if other.name != name or other.version == version.version:
                continue
            if int(other.version) > int(version.version):
                why = f"v{version.version} is older than v{other.version}, staged now"
                return [self._audit(event, "promotion.skipped", name, why)]
            await self._end_stage(other, status=INACTIVE)
            events.append(
                self._audit(
                    event, "stage.superseded", name, f"v{other.version} by v{version.version}"
                )
            )
        stage = self.rollout.first()
        await self._enter(version, stage, StagedFrom.of(event).to_tag())
        log.info("%s v%s enters its %s stage", name, version.version, stage)
        events += [
            self._staged(event, version, stage),
            self._audit(event, f"stage.{stage}", name, f"v{version.version}"),
        ]
        return events

    async def advance(self, now: datetime | None = None) -> list[Event]:
        """Move every staged version whose stage is over to the next one (the last: the
        promotion itself). Called often; reads the stages from MLflow, so a restart loses
        nothing."""
        now = now or datetime.now(UTC)
        events: list[Event] = []
        staged = await self._call(
            "reading the staged versions", registry.staged_versions, self.client
        )
        for version in staged:
            stage = held_stage(version.tags, Tag.STAGE)
            since = datetime.fromisoformat(version.tags.get(Tag.STAGE_SINCE, now.isoformat()))
            if stage is None or (now - since).total_seconds() < self.rollout.length(stage):
                continue
            origin = StagedFrom.from_tag(version.tags[Tag.STAGE_EVALUATION])
            evaluation = origin.evaluation(version.name, int(version.version), SERVICE)
            nxt = self.rollout.after(stage)
            if nxt != "champion":
                await self._enter(version, nxt, None, leaving=stage)
                log.info("%s v%s: %s over, now %s", version.name, version.version, stage, nxt)
                events += [
                    self._staged(evaluation, version, nxt),
                    self._audit(evaluation, f"stage.{nxt}", version.name, f"v{version.version}"),
                ]
                continue
            log.info("%s v%s: %s over, promoting it", version.name, version.version, stage)
            outcome = await self.promote(evaluation, staged=False)
            await self._end_stage(version, status=None)
            events += outcome
        return events

    async def _enter(
        self, version: ModelVersion, stage: Stage, origin: str | None, leaving: Stage | None = None
    ) -> None:
        """Aliases first, the stage tag last: a crash in between is redone by the next
        `advance` (moving an alias twice is harmless)."""
        await self._alias(version, stage)
        if leaving is not None:
            await self._drop_alias(version, leaving)
        tags = {Tag.STAGE_SINCE: datetime.now(UTC).isoformat()}
        if origin is not None:
            tags[Tag.STAGE_EVALUATION] = origin
        if (share := self.rollout.share(stage)) is not None:
            tags[Tag.STAGE_SHARE] = str(share)
        await self._set_tags(version, {**tags, Tag.STAGE: stage})

    async def _end_stage(self, version: ModelVersion, *, status: str | None) -> None:
        for alias in registry.STAGE_ALIASES:
            await self._drop_alias(version, alias)
        tags = {Tag.STAGE: ENDED}
        if status is not None:
            tags = {Tag.STATUS: status, **tags}
        await self._set_tags(version, tags)

    def _staged(
        self, event: ModelEvaluatedEvent, version: ModelVersion, stage: Stage
    ) -> ModelPromotedEvent:
        measured = event.payload.metrics
        payload = ModelPromoted(
            registered_model=version.name,
            version=int(version.version),
            targets=["predictor"],  # a stage serves on our predictor only
            stage=stage,
            share_percent=self.rollout.share(stage),
            confidence_at_promotion=measured.get("confidence"),
            expected_accuracy=measured.get("challenger_accuracy"),
        )
        return event.follow_up(ModelPromotedEvent, producer=SERVICE, payload=payload, part=stage)

    async def _end_staged_by_request(
        self, event: RollbackRequestedEvent, number: int, champion: ModelVersion | None
    ) -> list[Event]:
        """A rollback naming a staged version ends its stage; the champion stays."""
        name = event.model_key.registered_model
        version = await self._version(name, number)
        held = held_stage(version.tags, Tag.STAGE)
        if held is not None:
            await self._set_tags(version, {Tag.STAGE_ROLLED_BACK: held})
            await self._end_stage(version, status=ROLLED_BACK)
            log.info("%s v%s: its %s stage ended by a rollback", name, number, held)
        ended = held_stage(version.tags, Tag.STAGE_ROLLED_BACK)  # now, or before a redelivery
        if ended is None or champion is None:
            why = f"v{number} is neither staged nor the champion"
            return [self._audit(event, "rollback.skipped", name, why)]
        payload = ModelRolledBack(
            registered_model=name,
            from_version=number,
            to_version=int(champion.version),
            reason=event.payload.reason,
            stage=ended,
        )
        return [
            event.follow_up(ModelRolledBackEvent, producer=SERVICE, payload=payload),
            self._audit(event, "model.rolled_back", name, f"{ended} v{number} ended"),
        ]

    # --------------------------------------------------------------- rollback

    async def rollback(self, event: RollbackRequestedEvent) -> list[Event]:
        name = event.model_key.registered_model
        champion = await self._champion(name)
        named = event.payload.from_version
        if named is not None and (champion is None or named != int(champion.version)):
            return await self._end_staged_by_request(event, named, champion)
        if champion is None:
            raise PermanentError(f"{name} has no champion to roll back", code="no_champion")
        wanted = event.payload.to_version
        if wanted is None and champion.tags.get(Tag.STATUS) == CHAMPION:
            wanted = _int(champion.tags.get(Tag.PREVIOUS_CHAMPION))
        done = await self._rolled_back_to(name, champion)
        if done is not None:  # a redelivery: the alias already moved back
            return [self._rolled_back(event, done, champion)]
        if wanted is None:
            raise PermanentError(
                f"{name} v{champion.version} replaced no earlier version: nothing to roll back to",
                code="nothing_to_roll_back",
            )
        if wanted == int(champion.version):
            raise PermanentError(f"{name} v{wanted} is already live", code="already_live")
        back = await self._version(name, wanted)
        promotion = Promotion(
            event.model_key, back, champion, str(event.event_id), self.client, self.uri, gated=False
        )
        targets = [self.target(t, event.model_key) for t in self.targets_of(event.model_key)]
        steps: list[str] = []
        try:
            await self._deploy(promotion, targets, steps)
        except DeployError as exc:
            log.warning("%s not rolled back to v%s: %s", name, wanted, exc)
            failed = self._failed(event, name, wanted, exc, "rollback.failed")
            return self._steps(event, name, f"v{wanted}", steps) + failed
        finally:
            await asyncio.gather(*(t.close() for t in targets))
        await self._set_tags(champion, {Tag.STATUS: ROLLED_BACK, Tag.ROLLED_BACK_TO: str(wanted)})
        await self._move_alias(back)
        await self._set_tags(back, {Tag.STATUS: CHAMPION})
        log.info("%s rolled back from v%s to v%s", name, champion.version, wanted)
        return [
            *self._steps(event, name, f"v{wanted}", steps),
            self._rolled_back(event, champion, back),
            self._audit(event, "model.rolled_back", name, f"v{champion.version} → v{wanted}"),
        ]

    async def _rolled_back_to(self, name: str, champion: ModelVersion) -> ModelVersion | None:
        """The version a finished rollback took back, when `champion` is where it went."""
        found = await self._call(
            f"reading the rolled-back versions of {name}",
            registry.versions,
            self.client,
            name,
            **{Tag.STATUS: ROLLED_BACK, Tag.ROLLED_BACK_TO: champion.version},
        )
        return found[0] if found else None

    def _rolled_back(
        self, event: RollbackRequestedEvent, taken_back: ModelVersion, live: ModelVersion
    ) -> ModelRolledBackEvent:
        payload = ModelRolledBack(
            registered_model=live.name,
            from_version=int(taken_back.version),
            to_version=int(live.version),
            reason=event.payload.reason,
        )
        return event.follow_up(ModelRolledBackEvent, producer=SERVICE, payload=payload)

    # --------------------------------------------------------------- MLflow

    async def _make_champion(self, version: ModelVersion, previous: ModelVersion | None) -> None:
        tags = {Tag.PROMOTED_AT: datetime.now(UTC).isoformat()}
        if previous is not None:
            tags[Tag.PREVIOUS_CHAMPION] = previous.version
        # Tagged before the alias moves: a crash in between leaves a version tagged as
        # champion without the alias, which the redelivery completes.
        await self._set_tags(version, {**tags, Tag.STATUS: CHAMPION})
        await self._move_alias(version)
        if previous is not None:
            await self._set_tags(previous, {Tag.STATUS: INACTIVE})

    async def _alias(self, version: ModelVersion, alias: str) -> None:
        await self._call(
            f"moving {alias} of {version.name} to v{version.version}",
            self.client.set_registered_model_alias,
            version.name,
            alias,
            version.version,
        )

    async def _drop_alias(self, version: ModelVersion, alias: str) -> None:
        """Remove `alias` when `version` holds it (gone already, or another's: left)."""
        name = version.name
        holder = await self._call(
            f"reading {alias} of {name}", registry.version_by_alias, self.client, name, alias
        )
        if holder is not None and holder.version == version.version:
            await self._call(
                f"removing {alias} of {name}",
                self.client.delete_registered_model_alias,
                name,
                alias,
            )

    async def _move_alias(self, version: ModelVersion) -> None:
        await self._call(
            f"moving {registry.CHAMPION} of {version.name} to v{version.version}",
            self.client.set_registered_model_alias,
            version.name,
            registry.CHAMPION,
            version.version,
        )

    async def _set_tags(self, version: ModelVersion, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            await self._call(
                f"tagging {version.name} v{version.version}",
                self.client.set_model_version_tag,
                version.name,
                version.version,
                key,
                value,
            )
            version.tags[key] = value

    async def _version(self, name: str, number: int) -> ModelVersion:
        return await self._call(
            f"reading {name} v{number}",
            self.client.get_model_version,
            name,
            str(number),
            missing="version_not_found",
        )

    async def _champion(self, name: str) -> ModelVersion | None:
        return await asyncio.to_thread(registry.version_by_alias, self.client, name, CHAMPION)

    async def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        missing = kw.pop("missing", "not_found")
        with registry.translated(doing, uri=self.uri, missing=missing):
            return await asyncio.to_thread(fn, *args, **kw)

    def _failed(
        self, event: Event, name: str, version: int, exc: DeployError, action: str
    ) -> list[Event]:
        """`promotion.failed` naming the target and its error, and the audit of it."""
        payload = PromotionFailed(
            registered_model=name, version=version, target=exc.target, error=exc.reason[:4000]
        )
        return [
            event.follow_up(PromotionFailedEvent, producer=SERVICE, payload=payload),
            self._audit(event, action, name, str(exc)[:1000]),
        ]

    def _steps(self, event: Event, name: str, version: str, steps: list[str]) -> list[Event]:
        """One audit event per target step (`genesys-nlu.prepared`, `….activated`)."""
        return [self._audit(event, step, name, f"{version}: {step}") for step in steps]

    def _audit(self, event: Event, action: str, subject: str, detail: str) -> AuditEvent:
        return event.follow_up(
            AuditEvent,
            producer=SERVICE,
            payload=Audit(action=action, actor=SERVICE, subject=subject, details={"what": detail}),
            part=action,
        )


def champion_before(version: ModelVersion) -> int | None:
    return _int(version.tags.get(Tag.PREVIOUS_CHAMPION))


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _v(version: ModelVersion | None) -> str:
    return f"v{version.version}" if version is not None else "no champion"
