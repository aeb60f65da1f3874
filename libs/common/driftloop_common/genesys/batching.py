"""Request bodies: how the client encodes them, and batches of utterances that stay under
Genesys Cloud's request-size limit (~512 kB a body; a version's utterances are sent by PUTs,
batch by batch).

Sizes are exact: `body_size` is the length of the very bytes `GenesysClient` sends
(`encode_body`: compact JSON, UTF-8).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.genesys.models import NluDomainVersion, NluIntent, NluUtterance

REQUEST_LIMIT_BYTES = 512 * 1024
HEADROOM_BYTES = 32 * 1024  # well under the limit: proxies count headers, Genesys rounds
DEFAULT_BODY_LIMIT = REQUEST_LIMIT_BYTES - HEADROOM_BYTES


def encode_body(body: Any) -> bytes:
    """The bytes of a JSON body (a pydantic model is sent as `to_body()` would give it)."""
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def body_size(body: Any) -> int:
    return len(encode_body(body))


def batch_utterances(
    version: NluDomainVersion, *, limit_bytes: int = DEFAULT_BODY_LIMIT
) -> list[NluDomainVersion]:
    """`version` split into copies whose bodies each stay within `limit_bytes`.

    Every utterance lands in exactly one batch, in its intent, in order; an intent appears in
    each batch that holds some of its utterances (one without any, in the batch of its turn).
    Each batch is `version` itself with fewer utterances (same id, language, description,
    entities), ready to be sent as is. One utterance too big for a body by itself is a
    `PermanentError` (`utterance_too_large`).
    """
    empty = version.model_copy(update={"intents": []})
    base = body_size(empty)  # `…"intents":[]…`: every intent goes inside those brackets
    batches: list[list[tuple[NluIntent, list[NluUtterance]]]] = []
    current: list[tuple[NluIntent, list[NluUtterance]]] = []
    size = base

    def flush() -> None:
        nonlocal current, size
        if current:
            batches.append(current)
        current, size = [], base

    def add(skeleton: NluIntent, skeleton_size: int, utterance: NluUtterance | None) -> bool:
        """Add `utterance` (or just the intent) to the current batch if it fits."""
        nonlocal size
        open_here = bool(current) and current[-1][0] is skeleton
        cost = 0
        if not open_here:
            cost += (1 if current else 0) + skeleton_size  # `,` between intents
        if utterance is not None:
            has_some = open_here and bool(current[-1][1])
            cost += (1 if has_some else 0) + body_size(utterance)
        if size + cost > limit_bytes:
            return False
        if not open_here:
            current.append((skeleton, []))
        if utterance is not None:
            current[-1][1].append(utterance)
        size += cost
        return True

    for intent in version.intents:
        skeleton = intent.model_copy(update={"utterances": []})
        skeleton_size = body_size(skeleton)
        for utterance in intent.utterances or [None]:
            if add(skeleton, skeleton_size, utterance):
                continue
            flush()
            if not add(skeleton, skeleton_size, utterance):
                what = f"intent {intent.name!r}" + (" utterance" if utterance else "")
                raise PermanentError(
                    f"{what} does not fit in a request body of {limit_bytes} bytes by itself",
                    code="utterance_too_large",
                )
    flush()
    if not batches:
        return [empty]
    return [
        version.model_copy(
            update={
                "intents": [
                    skeleton.model_copy(update={"utterances": utterances})
                    for skeleton, utterances in batch
                ]
            }
        )
        for batch in batches
    ]
