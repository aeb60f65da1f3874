"""Fuzzing harness: hostile payloads for every decoder, and what runs after each decoder.

Shared by `tests/unit/test_fuzz.py` (a small, derandomized budget in `make test`) and
`bench/bench_fuzz.py` (10,000+ payloads with counts per outcome). It imports nothing
from `bench/`; the bench imports this module (`tests.unit.fuzz_harness`).

The property, for every target:

    every record either decodes or is rejected with a `PermanentError` (the DLQ path);
    what decodes never crashes the handler (events or a `PermanentError` only), the
    flush (events and/or `DeadLetter`s only, never an exception) or the pure code after
    the decoder (the trainer's split windows); and what the loop would publish
    serializes (a flush's events also fit the producer's 1 MiB request limit, since a
    flush has no DLQ path for an unsendable event).

Payloads (`records_for(target)`): events generated from the pydantic models in
`driftloop_common.contracts.events` (valid, then 0-3 fields mutated: deleted, null, wrong type,
huge, NaN/Infinity, lone surrogate escapes, extreme dates and epoch-ms values, deep
nesting), the Genesys EventBridge examples (`tests.real_data`, when present; built-in
envelopes of the same shape otherwise) and transcription / wrap-up / normalized pieces
mutated field by field, arbitrary JSON, random bytes, and byte-level damage to any of
these (truncation, invalid UTF-8, a BOM, flipped bytes).
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import enum
import functools
import json
import logging
import math
import shutil
import tempfile
import time
import traceback
import types
import typing
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import numpy as np
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import (
    EVENT_CLASSES,
    EncoderInfo,
    Event,
    InteractionEmbeddedEvent,
    InteractionRawEvent,
    ModelKey,
    ModelPromotedEvent,
    ModelRolledBackEvent,
    ModelTrainedEvent,
    TrainingRequestedEvent,
    decode_event,
)
from driftloop_common.runtime.settings import MlflowSettings

# ---------------------------------------------------------------- hostile values

SURROGATE_STRINGS = ("\udfff", "\ud800", "ok \udc00 then", "\ud83d")  # lone halves
EXTREME_DATES = (
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+01:00",  # UTC would be year 0
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59.999999+00:00",
    "9999-12-31T23:59:59-14:00",  # UTC would be year 10000
    "9999-12-31T23:59:59+14:00",
    "1970-01-01T00:00:00Z",
    "2262-04-11T23:47:16.854775807Z",  # pandas' nanosecond limit
    "2026-02-30T00:00:00Z",  # no such day
    "2026-11-24T20:00:00",  # naive
    "+275760-09-13T00:00:00Z",
    "2026-11-24",
)
EXTREME_EPOCH_MS = (
    0,
    -1,
    1,
    253_402_300_799_999,  # 9999-12-31T23:59:59.999Z
    253_402_300_800_000,  # year 10000
    8_640_000_000_000_000,  # JavaScript's last date
    2**63 - 1,
    2**64,
    -(2**63),
    4_102_444_800_000,  # 2100
    32_503_680_000_000,  # 3000
    1e20,
    1_649_237_504_949.5,
)
HUGE_SIZES = (70_000, 300_000, 1_100_000)
SPECIAL_FLOATS = (math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0)
DEEP = "__fuzz_deep__"  # "__fuzz_deep__<n>": n nested arrays in the serialized JSON
DIGITS = "__fuzz_digits__"  # "__fuzz_digits__<n>": a number of n digits (Python's int
# conversion refuses more than 4,300; JSON has no limit)

_DELETE = object()


@dataclass(frozen=True)
class Mutation:
    """One change at one place of a JSON tree (`path`: keys and list indices)."""

    path: tuple[str | int, ...]
    kind: str
    value: Any = None

    def __str__(self) -> str:
        where = ".".join(map(str, self.path)) or "(root)"
        shown = _short(self.value, 40) if self.kind not in ("delete", "null") else ""
        return f"{where}:{self.kind}{'=' + shown if shown else ''}"


def mutation_values(original: Any) -> list[tuple[str, Any]]:
    """Every fixed replacement the field-by-field sweep tries (`(kind, value)`)."""
    values: list[tuple[str, Any]] = [
        ("delete", _DELETE),
        ("null", None),
        ("int", 0),
        ("negative", -1),
        ("float", 1.5),
        ("bool", True),
        ("empty_str", ""),
        ("blank_str", "   \t\n"),
        ("str", "x"),
        ("list", []),
        ("dict", {}),
        ("wrapped_list", [original]),
        ("wrapped_dict", {"value": original}),
        ("nan", math.nan),
        ("inf", math.inf),
        ("huge_int", 10**30),
        ("huge_str", "x" * HUGE_SIZES[0]),
        ("surrogate", SURROGATE_STRINGS[0]),
        ("surrogate_in_text", SURROGATE_STRINGS[2]),
        ("control_chars", "a\x00b\x1b[31m\u202e"),
        ("date_year_1", EXTREME_DATES[1]),
        ("date_year_9999", EXTREME_DATES[4]),
        ("epoch_ms_year_9999", EXTREME_EPOCH_MS[3]),
        ("epoch_ms_far_future", EXTREME_EPOCH_MS[5]),
        ("deep", f"{DEEP}2000"),
        ("digits_5000", f"{DIGITS}5000"),
    ]
    if isinstance(original, str):
        values.append(("as_number", 1))
    elif original is not None and not isinstance(original, dict | list):
        values.append(("as_string", str(original)))
    return values


def hostile_value() -> st.SearchStrategy[Any]:
    """One replacement value for a field: wrong types, extremes, huge, surrogates, depth."""
    return st.one_of(
        st.sampled_from([None, 0, -1, 1.5, True, False, "", "x", [], {}, 10**30, -(2**63)]),
        st.sampled_from(SPECIAL_FLOATS),
        st.sampled_from(SURROGATE_STRINGS),
        st.sampled_from(EXTREME_DATES),
        st.sampled_from(EXTREME_EPOCH_MS),
        st.builds(lambda n, c: c * n, st.sampled_from(HUGE_SIZES), st.sampled_from("xé💥 ")),
        st.integers(min_value=10, max_value=100_000).map(lambda n: f"{DEEP}{n}"),
        st.sampled_from([20, 400, 4301, 100_000]).map(lambda n: f"{DIGITS}{n}"),
        st.text(max_size=30),
        st.integers(),
        st.floats(),
    )


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each with its weight. (`st.one_of` flattens nested
    `one_of`s and picks among all their branches alike, so a strategy made of many
    branches, such as `junk()`, would crowd out the rest.)"""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(pool))).flatmap(lambda i: pool[i])


def apply(tree: Any, mutation: Mutation) -> Any:
    """A copy of `tree` with `mutation` applied (a missing path leaves it unchanged)."""
    tree = copy.deepcopy(tree)
    if not mutation.path:
        return tree if mutation.value is _DELETE else mutation.value
    parent = tree
    for part in mutation.path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return tree
    last = mutation.path[-1]
    try:
        if mutation.value is _DELETE:
            del parent[last]
        elif mutation.kind == "add_field":
            parent[f"unknownField{len(parent)}"] = mutation.value
        else:
            parent[last] = mutation.value
    except (KeyError, IndexError, TypeError):
        pass
    return tree


def paths(tree: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a JSON tree (not the root), parents before children."""
    found: list[tuple[str | int, ...]] = []
    items: Sequence[tuple[str | int, Any]] = ()
    if isinstance(tree, dict):
        items = list(tree.items())
    elif isinstance(tree, list):
        items = list(enumerate(tree))
    for key, value in items:
        found.append((*prefix, key))
        found += paths(value, (*prefix, key))
    return found


def to_json(tree: Any, *, ensure_ascii: bool = True) -> bytes:
    """Serialize like a careless producer: NaN/Infinity tokens, surrogates escaped (or,
    without `ensure_ascii`, written as invalid UTF-8), `DEEP<n>` as n nested arrays,
    `DIGITS<n>` as an n-digit number."""
    text = json.dumps(tree, ensure_ascii=ensure_ascii, allow_nan=True, default=str)
    for marker, expand in ((DEEP, lambda n: "[" * n + "]" * n), (DIGITS, lambda n: "9" * n)):
        while (at := text.find(f'"{marker}')) != -1:
            end = text.index('"', at + 1)
            text = text[:at] + expand(int(text[at + 1 + len(marker) : end])) + text[end + 1 :]
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated_json(draw: st.DrawFn, tree: Any, max_mutations: int = 3) -> bytes:
    """`tree` with up to `max_mutations` fields changed, serialized, maybe byte-damaged."""
    mutations = []
    for _ in range(min(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3])), max_mutations)):
        where = paths(tree)
        if not where:
            break
        path = draw(st.sampled_from(where))
        kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add_field"]))
        value = _DELETE if kind == "delete" else draw(hostile_value())
        mutation = Mutation(path, kind, value)
        tree = apply(tree, mutation)
        mutations.append(mutation)
    raw = to_json(tree, ensure_ascii=draw(st.booleans()))
    return draw(damaged(raw))


@st.composite
def damaged(draw: st.DrawFn, raw: bytes) -> bytes:
    """Usually `raw` unchanged; otherwise truncated, or with invalid UTF-8 or junk bytes."""
    kind = draw(
        st.sampled_from(["none"] * 6 + ["truncate", "invalid_utf8", "flip", "bom", "append"])
    )
    if kind == "none" or not raw:
        return raw
    at = draw(st.integers(0, len(raw) - 1))
    if kind == "truncate":
        return raw[:at]
    if kind == "invalid_utf8":
        bad = draw(
            st.sampled_from([b"\xff", b"\xc3", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\x80"])
        )
        return raw[:at] + bad + raw[at:]
    if kind == "flip":
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    return raw + draw(st.sampled_from([b"}", b"]", b" {}", b"\x00", b"garbage"]))


def junk() -> st.SearchStrategy[bytes]:
    """Payloads of no known shape: random bytes, scalars, deep nesting, arbitrary JSON."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    json_values = st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=12,
    )
    return st.one_of(
        st.binary(max_size=200),
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b"{}",
                b'""',
                b"NaN",
                b"Infinity",
                b"-Infinity",
                b'{"a": NaN}',
                b'"\\udfff"',
                b'{"event_type": "\\udfff"}',
                b"[" * 100_000,
                b'{"a":' * 50_000,
                b"[" * 5000 + b"]" * 5000,
                b'"' + b"x" * 1_100_000 + b'"',
                b"\xef\xbb\xbf{}",
                b"\xff\xfe{\x00}\x00",
            ]
        ),
        json_values.flatmap(lambda v: mutated_json(v, max_mutations=1)),
    )


# ---------------------------------------------------------------- events from the models

_ZONES = [
    UTC,
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-14)),
    timezone(timedelta(hours=5, minutes=30)),
]
MODEL_KEYS = ("intent/en-us", "intent/es-es", "sentiment/en-us", "lead-score/en-us")


def _bounds(metadata: Sequence[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        for name in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            if isinstance(item, annotated_types.BaseMetadata) and hasattr(item, name):
                found[name] = getattr(item, name)
    return found


def times() -> st.SearchStrategy[str]:
    """ISO 8601 times with an offset: mostly recent, any year 1-9999 now and then."""
    recent = st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
    )
    anywhen = st.datetimes(timezones=st.sampled_from(_ZONES))
    return st.one_of(recent, recent, recent, anywhen).map(lambda t: t.isoformat())


def value_for(annotation: Any, metadata: Sequence[Any] = ()) -> st.SearchStrategy[Any]:
    """A JSON value that the annotation (a pydantic field type) usually accepts."""
    bounds = _bounds(metadata)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        inner = st.one_of(*[value_for(a, metadata) for a in options])
        return st.none() | inner if type(None) in get_args(annotation) else inner
    if origin is typing.Annotated:
        base, *extra = get_args(annotation)
        return value_for(base, [*metadata, *extra])
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return st.lists(value_for(item), min_size=bounds.get("min_length", 0), max_size=4)
    if origin is dict:
        _, item = get_args(annotation)
        return st.dictionaries(st.text(max_size=8), value_for(item), max_size=3)
    if annotation is AwareDatetime or annotation is datetime:
        return times()
    if annotation is uuid.UUID:
        return st.uuids().map(str)
    if annotation is ModelKey:
        return st.sampled_from(MODEL_KEYS)
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return model_json(annotation)
        if issubclass(annotation, enum.Enum):
            return st.sampled_from([m.value for m in annotation])
        if annotation is bool:
            return st.booleans()
        if annotation is int:
            low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else -5)
            return st.integers(min_value=low, max_value=low + 10**6)
        if annotation is float:
            return st.floats(
                min_value=bounds.get("ge", bounds.get("gt", -1e6)),
                max_value=bounds.get("le", bounds.get("lt", 1e6)),
                allow_nan=False,
                allow_infinity=False,
            )
        if annotation is str:
            return st.text(min_size=max(bounds.get("min_length", 0), 1), max_size=24)
    raise TypeError(f"no strategy for {annotation!r}")


_ALWAYS = frozenset({"event_type", "event_id", "correlation_id", "occurred_at"})


def model_json(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object for `model`, field by field from its annotations (optional fields
    now and then left out)."""
    fields = {}
    for name, info in model.model_fields.items():
        if name == "schema_version":
            strategy: st.SearchStrategy[Any] = st.just(1)
        else:
            strategy = value_for(info.annotation, info.metadata)
        # the discriminator always; ids and time too, or defaults (uuid4, now) would make
        # runs differ (mutations still delete them now and then)
        optional = not info.is_required() and name not in _ALWAYS
        fields[name] = (strategy, optional)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = {}
        for name, (strategy, optional) in fields.items():
            if optional and draw(st.integers(0, 3)) == 0:
                continue
            out[name] = draw(strategy)
        return out

    return build()


def event_json(classes: Sequence[type[Event]] = EVENT_CLASSES) -> st.SearchStrategy[dict]:
    return st.sampled_from(list(classes)).flatmap(model_json)


def event_records(
    classes: Sequence[type[Event]] = EVENT_CLASSES,
) -> st.SearchStrategy[bytes]:
    """Events of `classes` from the models, 0-3 fields mutated; now and then other
    events, Genesys shapes or junk (a consumer gets whatever was put on its topic)."""
    own = event_json(classes).flatmap(mutated_json)
    return weighted((6, own), (1, event_json().flatmap(mutated_json)), (1, genesys()), (1, junk()))


# ---------------------------------------------------------------- Genesys shapes

CID = "2f7bf00a-0fc2-4d6a-9b56-92238191433e"
EXAMPLE_MS = 1_649_237_504_949  # the EventBridge examples' customer.end eventTime
EXAMPLE_TIME = datetime.fromtimestamp(EXAMPLE_MS / 1000, UTC)


def _notification(topic: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"topicName": topic, "version": "2", "eventBody": body, "metadata": {"x": "y"}}


def _eventbridge(kind: str, body: dict[str, Any], cid: str) -> dict[str, Any]:
    pattern = f"v2.detail.events.conversation.{{id}}.{kind}"
    return {
        "version": "0",
        "id": "58fb5dac-f077-4eec-a25f-c638dbdd4368",
        "detail-type": pattern,
        "source": "aws.partner/genesys.com/cloud/test",
        "time": "2022-06-14T16:12:11.000Z",
        "detail": _notification(pattern.replace("{id}", cid), body),
    }


def _example_files() -> list[Path]:
    """The EventBridge example events (`input/`) and the Kinesis records derived from
    them (`output/`: another shape, which the collector must refuse cleanly)."""
    from tests.real_data import EVENTBRIDGE_EXAMPLES

    folders = (EVENTBRIDGE_EXAMPLES, EVENTBRIDGE_EXAMPLES.parent / "output")
    return [p for folder in folders if folder.is_dir() for p in sorted(folder.glob("*.json"))]


def eventbridge_examples() -> dict[str, dict[str, Any]]:
    """The real EventBridge examples (`tests.real_data`) by file name; when they are
    absent, envelopes of the same shape (customer.start / customer.end)."""
    found = {f"{p.parent.name}/{p.name}": json.loads(p.read_text()) for p in _example_files()}
    if found:
        return found
    body = {"conversationId": CID, "mediaType": "CHAT", "direction": "INBOUND"}
    return {
        "builtin-customer-start": _eventbridge(
            "customer.start", {**body, "eventTime": EXAMPLE_MS - 60_000}, CID
        ),
        "builtin-customer-end": _eventbridge(
            "customer.end", {**body, "eventTime": EXAMPLE_MS}, CID
        ),
    }


def conversation_pieces(cid: str = CID, ms: int = EXAMPLE_MS) -> dict[str, dict[str, Any]]:
    """One whole conversation, piece by piece (name → JSON): what a collector needs to
    emit it. Start and end are the EventBridge examples' shape (EventBridge envelope), the
    transcription a bare notification, the wrap-up an EventBridge event."""
    detail = {"conversationId": cid, "mediaType": "CHAT", "queueId": "q-1"}

    def utterance(uid: str, text: str, channel: str = "EXTERNAL", final: bool = True) -> dict:
        return {
            "utteranceId": uid,
            "isFinal": final,
            "channel": channel,
            "dialect": "en-US",
            "engineProvider": "GENESYS",
            "alternatives": [
                {
                    "confidence": 0.9,
                    "offsetMs": 1000,
                    "durationMs": 900,
                    "transcript": text,
                    "words": [],
                },
                {"confidence": 0.2, "offsetMs": 1000, "durationMs": 900, "transcript": "no"},
            ],
        }

    return {
        "start": _eventbridge("customer.start", {**detail, "eventTime": ms - 60_000}, cid),
        "transcription": _notification(
            f"v2.conversations.{cid}.transcription",
            {
                "eventTime": ms - 30_000,
                "conversationId": cid,
                "communicationId": "comm-1",
                "status": {"status": "SESSION_ONGOING"},
                "transcripts": [
                    utterance("u1", "I want to cancel my order"),
                    utterance("u2", "Sure, I have cancelled it", channel="INTERNAL"),
                    utterance("u3", "and block my card please"),
                    utterance("u4", "interim", final=False),
                ],
            },
        ),
        "end": _eventbridge("customer.end", {**detail, "eventTime": ms}, cid),
        "wrapup": _eventbridge(
            "wrapup", {"conversationId": cid, "eventTime": ms + 5_000, "wrapupCode": "cancel"}, cid
        ),
    }


def long_transcription(cid: str, part: int, size: int) -> dict[str, Any]:
    """A transcription message of one customer utterance of about `size` bytes (a long
    call arrives as many of these; two of 600 KB made one event over 1 MiB)."""
    words = " ".join(["please", "block", "my", "card", "now"] * (size // 25 + 1))[:size]
    return _notification(
        f"v2.conversations.{cid}.transcription",
        {
            "eventTime": EXAMPLE_MS - 20_000 + part,
            "conversationId": cid,
            "transcripts": [
                {
                    "utteranceId": f"long-{part}",
                    "isFinal": True,
                    "channel": "EXTERNAL",
                    "dialect": "en-US",
                    "alternatives": [{"confidence": 0.9, "offsetMs": part, "transcript": words}],
                }
            ],
        },
    )


def with_event_time(tree: dict[str, Any], ms: Any) -> dict[str, Any]:
    """A copy of a Genesys message (EventBridge or bare) with its `eventTime` replaced."""
    path = ("detail", "eventBody", "eventTime") if "detail" in tree else ("eventBody", "eventTime")
    return apply(tree, Mutation(path, "event_time", ms))


def normalized_interaction(cid: str = "norm-1", at: datetime = EXAMPLE_TIME) -> dict[str, Any]:
    """A valid `interaction.raw` envelope (driftloop's own form of one conversation)."""
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, cid)),
        "event_type": "interaction.raw",
        "schema_version": 1,
        "occurred_at": at.isoformat(),
        "correlation_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, cid)),
        "producer": "fuzz",
        "model_key": "intent/en-us",
        "payload": {
            "conversation_id": cid,
            "text": "where is my refund",
            "language": "en-US",
            "completed_at": at.isoformat(),
            "label": "refund",
            "queue": "q-1",
            "media_type": "CALL",
        },
    }


def seeds() -> dict[str, dict[str, Any]]:
    """Every valid Genesys / normalized message the field-by-field sweep starts from."""
    return {
        **{f"eventbridge:{name}": tree for name, tree in eventbridge_examples().items()},
        **{f"piece:{name}": tree for name, tree in conversation_pieces().items()},
        "normalized": normalized_interaction(),
    }


def genesys() -> st.SearchStrategy[bytes]:
    """One Genesys (or normalized) message: a seed with 0-3 fields mutated."""
    trees = list(seeds().values())
    near = st.integers(-3 * 86_400, 3_600).map(lambda s: EXAMPLE_TIME + timedelta(seconds=s))
    when = st.one_of(near.map(datetime.isoformat), near.map(datetime.isoformat), times())
    normalized = st.builds(
        lambda e, lang, at: {
            **e,
            "payload": {**e["payload"], "language": lang, "completed_at": at},
        },
        model_json(InteractionRawEvent),
        st.sampled_from(["en-us", "es-es", "en-US", "fr-fr"]),
        when,
    )
    return st.one_of(st.sampled_from(trees), normalized).flatmap(mutated_json)


@st.composite
def conversations(draw: st.DrawFn) -> list[bytes]:
    """The records of 1-2 conversations for one collector: each piece mutated or not,
    pieces dropped, duplicated and shuffled, and now and then junk in between."""
    records: list[bytes] = []
    for n in range(draw(st.integers(1, 2))):
        cid = draw(st.sampled_from([CID, f"conv-{n}", "x"]))
        pieces = list(conversation_pieces(cid).values())
        if draw(st.integers(0, 3)) == 0:  # one piece at an extreme time
            index = draw(st.integers(0, len(pieces) - 1))
            pieces[index] = with_event_time(pieces[index], draw(st.sampled_from(EXTREME_EPOCH_MS)))
        if draw(st.integers(0, 4)) == 0:
            near = EXAMPLE_TIME + timedelta(minutes=draw(st.integers(-600, 60)))
            anywhen = st.datetimes(timezones=st.sampled_from(_ZONES))
            pieces = [normalized_interaction(cid, draw(st.just(near) | anywhen))]
        if size := draw(st.sampled_from([0, 0, 0, 0, 40_000, 600_000])):  # a long call
            for part in (1, 2):
                pieces.append(long_transcription(cid, part, size))
        chosen = draw(st.lists(st.sampled_from(range(len(pieces))), min_size=1, max_size=6))
        for index in chosen:
            clean = draw(st.booleans())
            piece = pieces[index]
            records.append(to_json(piece) if clean else draw(mutated_json(piece, max_mutations=2)))
        if draw(st.integers(0, 5)) == 0:
            records.append(draw(junk()))
    return draw(st.permutations(records))


# ---------------------------------------------------------------- outcomes

MAX_REQUEST_BYTES = 1_048_576
"""aiokafka's default `max_request_size`: a larger record is refused by the producer."""


@dataclass(frozen=True)
class Outcome:
    """What became of one record, or of a flush: `ok`, `rejected` (a PermanentError: the
    DLQ, with its code) or `crashed` (anything else: the loop would retry, then exit)."""

    target: str
    stage: str  # decode, handle, flush, windows, publish, roundtrip
    status: Literal["ok", "rejected", "crashed"]
    code: str = ""  # the rejection code, or the exception type of a crash
    message: str = ""
    traceback: str = ""
    where: str = ""  # a crash's innermost frame in the project's own code

    @property
    def label(self) -> str:
        if self.status == "ok":
            return f"{self.stage}:ok:{self.code}" if self.code else f"{self.stage}:ok"
        return f"{self.stage}:{self.status}:{self.code}"


@dataclass
class CaseResult:
    target: str
    case: FuzzCase
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def crashes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "crashed"]

    def describe(self) -> str:
        records = self.case.records
        when = "broker time" if self.case.broker_time else "producer time"
        lines = [f"{self.target}: {len(records)} record(s), {when}"]
        lines += [f"  record {i}: {_short(r, 300)}" for i, r in enumerate(records)]
        for crash in self.crashes:
            lines.append(
                f"  crashed in {crash.stage} at {crash.where}: {crash.code}: {crash.message}"
            )
            lines.append(_indent(crash.traceback))
        return "\n".join(lines)


class _Case:
    """Collects the outcomes of one case; `stage` runs a step and records how it went."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.outcomes: list[Outcome] = []

    def stage(self, name: str, step: Callable[[], Any], *, rejectable: bool = True) -> Any:
        """Run `step`: its value, or None when it was rejected or crashed (recorded)."""
        try:
            value = step()
        except PermanentError as exc:
            if rejectable:
                self.outcomes.append(Outcome(self.target, name, "rejected", exc.code, str(exc)))
                return None
            self._crash(name, exc)
            return None
        except Exception as exc:
            self._crash(name, exc)
            return None
        return value

    def ok(self, name: str) -> None:
        self.outcomes.append(Outcome(self.target, name, "ok"))

    def _crash(self, name: str, exc: BaseException) -> None:
        self.outcomes.append(
            Outcome(
                self.target,
                name,
                "crashed",
                type(exc).__name__,
                _short(str(exc), 300),
                "".join(traceback.format_exception(exc)),
                _where(exc),
            )
        )


def _publishable(case: _Case, name: str, outputs: Sequence[Any], *, from_flush: bool) -> bool:
    """What the loop does with outputs before acks: serialize each event (and, after a
    flush, it must fit one producer request: there is no DLQ path for it there). Records
    `publish:ok:<event type>` per event and `flush:rejected:<code>` per dead letter."""
    from driftloop_common.runtime.loop import DeadLetter

    for output in outputs:
        if isinstance(output, DeadLetter):
            if not (
                isinstance(output.error, PermanentError)
                and isinstance(output.value, bytes)
                and all(isinstance(o, int) for offs in output.offsets.values() for o in offs)
            ):
                case._crash(name, TypeError(f"malformed DeadLetter {output!r:.200}"))
                return False
            case.outcomes.append(
                Outcome(case.target, name, "rejected", output.error.code, str(output.error))
            )
            continue
        if not isinstance(output, Event):
            case._crash(name, TypeError(f"not an event: {output!r:.200}"))
            return False
        raw = case.stage("publish", output.to_bytes, rejectable=False)
        if raw is None:
            return False
        if from_flush and len(raw) + len(output.key) > MAX_REQUEST_BYTES:
            case._crash(
                "publish",
                ValueError(
                    f"{output.event_type} of {len(raw):,} bytes from a flush exceeds the "
                    f"producer's {MAX_REQUEST_BYTES:,}-byte request limit"
                ),
            )
            return False
        case.outcomes.append(Outcome(case.target, "publish", "ok", output.event_type))
    return True


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class FuzzRecord:
    """A consumed record, as `driftloop_common.runtime.loop.Record` describes it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0
    timestamp_type: int = 0


def _records(topic: str, values: Sequence[bytes], at: datetime, log_append: bool) -> list:
    ms = int(at.timestamp() * 1000)
    return [
        FuzzRecord(topic, 0, offset, value, None, (), ms + offset, 1 if log_append else 0)
        for offset, value in enumerate(values)
    ]


def run_decode_event(values: Sequence[bytes], broker_time: bool = False) -> list[Outcome]:
    """`decode_event` (any type): what decodes re-encodes and decodes to the same event."""
    case = _Case("decode_event")
    for value in values:
        event = case.stage("decode", lambda value=value: decode_event(value))
        if event is None:
            continue
        case.ok("decode")
        again = case.stage(
            "roundtrip", lambda event=event: decode_event(event.to_bytes()), rejectable=False
        )
        if again is not None and again != event:
            case._crash("roundtrip", AssertionError(f"{again!r:.300} != {event!r:.300}"))
    return case.outcomes


def run_auditor(values: Sequence[bytes], broker_time: bool = False) -> list[Outcome]:
    """The auditor's decode, then its handler (an audit event) and the publish."""
    from driftloop_auditor.handlers import handle
    from driftloop_auditor.service import decode

    case = _Case("auditor")
    for record in _records("training.requested", values, EXAMPLE_TIME, broker_time):
        event = case.stage("decode", lambda record=record: decode(record))
        if event is None:
            continue
        case.ok("decode")
        outputs = case.stage("handle", lambda event=event: _run_async(handle(event)))
        if outputs is not None and _publishable(case, "handle", outputs, from_flush=False):
            case.ok("handle")
    return case.outcomes


def trainer_decode() -> Callable[[Any], TrainingRequestedEvent]:
    """The trainer's decode as its `main` builds it (`decoder(config)`; a plain `decode`
    in older trees). The config names an MLflow that is never contacted."""
    import driftloop_trainer.service as trainer_main

    if hasattr(trainer_main, "decoder"):
        from driftloop_trainer.training import TrainerConfig

        config = TrainerConfig(
            mlflow=MlflowSettings(tracking_uri="http://127.0.0.1:9"), store_url="memory://fuzz"
        )
        return trainer_main.decoder(config)
    return trainer_main.decode


def run_trainer(values: Sequence[bytes], broker_time: bool = False) -> list[Outcome]:
    """The trainer's decode, then the pure part of a training: the split windows of the
    request's `as_of` (or `occurred_at`), as `Trainer.train` computes and logs them."""
    from driftloop_common.ml.modeling.splits import SplitConfig

    decode, splits = trainer_decode(), SplitConfig()
    case = _Case("trainer")
    for record in _records("training.requested", values, EXAMPLE_TIME, broker_time):
        request = case.stage("decode", lambda record=record: decode(record))
        if request is None:
            continue
        case.ok("decode")

        def windows(request: TrainingRequestedEvent = request) -> bool:
            as_of = request.payload.as_of or request.occurred_at
            for window in splits.windows(as_of).values():
                str(window)  # logged as MLflow params (isoformat)
            return bool(f"{as_of:%Y%m%dT%H%M}")  # the run name

        if case.stage("windows", windows):
            case.ok("windows")
    return case.outcomes


def run_evaluator(values: Sequence[bytes], broker_time: bool = False) -> list[Outcome]:
    """The evaluator's decode (the rest needs MLflow)."""
    from driftloop_evaluator.service import decode

    case = _Case("evaluator")
    for record in _records("model.trained", values, EXAMPLE_TIME, broker_time):
        event = case.stage("decode", lambda record=record: decode(record))
        if event is None:
            continue
        assert isinstance(event, ModelTrainedEvent)
        case.ok("decode")
    return case.outcomes


# -- drift monitor

DRIFT_KEY = "intent/en-us"
DRIFT_ENCODER = EncoderInfo(id="fake", precision="fp32")
DRIFT_TIME = datetime(2026, 11, 24, 12, tzinfo=UTC)
_BASELINE: list[Any] = []


def drift_baseline() -> Any:
    """A small baseline of 384-dimensional vectors for `intent/en-us` (built once)."""
    if not _BASELINE:
        from driftloop_common.ml.drift.baseline import build_baseline

        rng = np.random.default_rng(0)
        x = rng.normal(size=(400, 384)).astype(np.float32)
        labels = [("refund", "cancel", "card")[i % 3] for i in range(400)]
        _BASELINE.append(
            build_baseline(
                x, encoder=DRIFT_ENCODER, labels=labels, source="fuzz v1", max_components=16
            )
        )
    return _BASELINE[0]


@st.composite
def embedded_event(draw: st.DrawFn) -> dict[str, Any]:
    """An `interaction.embedded` event for the baseline's key: a 384-float embedding at
    some scale (huge values included), times near the window or anywhere in 1-9999."""
    event = draw(model_json(InteractionEmbeddedEvent))
    seed, scale = draw(st.integers(0, 2**16)), draw(st.sampled_from([1.0, 1e-30, 1e30, 1e300]))
    vector = np.random.default_rng(seed).normal(size=384) * scale
    when = draw(
        st.one_of(
            st.integers(0, 48 * 60).map(lambda m: (DRIFT_TIME + timedelta(minutes=m)).isoformat()),
            st.integers(0, 48 * 60).map(lambda m: (DRIFT_TIME + timedelta(minutes=m)).isoformat()),
            times(),
        )
    )
    payload = {
        **event["payload"],
        "language": "en-us",
        "completed_at": when,
        "embedding": [float(v) for v in vector],
        "encoder": draw(st.sampled_from([DRIFT_ENCODER.model_dump(), event["payload"]["encoder"]])),
        "label": draw(st.sampled_from([None, "refund", "cancel", "card", "new-intent"])),
    }
    return {
        **event,
        "model_key": draw(st.sampled_from([DRIFT_KEY, DRIFT_KEY, "intent/es-es"])),
        "payload": payload,
    }


@st.composite
def drift_records(draw: st.DrawFn) -> list[bytes]:
    """A poll's worth of records for the drift-monitor: mostly embedded interactions of
    one key, each with its own event id (now and then a repeated one: the monitor counts
    an id once), some mutated; now and then a promotion or rollback, or anything else."""
    records = []
    for n in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["clean"] * 6 + ["mutated"] * 3 + ["lifecycle", "other"]))
        if kind == "lifecycle":
            lifecycle = event_json([ModelPromotedEvent, ModelRolledBackEvent])
            records.append(draw(lifecycle.flatmap(mutated_json)))
        elif kind == "other":
            records.append(draw(event_records()))
        else:
            event = draw(embedded_event())
            if draw(st.integers(0, 9)):
                event["event_id"] = str(uuid.uuid5(_FUZZ_IDS, str(n)))
            records.append(to_json(event) if kind == "clean" else draw(mutated_json(event, 1)))
    return records


_FUZZ_IDS = uuid.UUID("3b0f7c1e-0d6a-4c8e-9a51-5f2e8d7c6b4a")


@functools.cache
def _drift_settings() -> Any:
    """Settings that make a few rows enough for a check, a bootstrap and a new intent."""
    from driftloop_drift_monitor.settings import DriftMonitorSettings

    return DriftMonitorSettings(
        check_every_rows=3,
        min_rows=3,
        min_labelled=3,
        bootstrap_rows=4,
        new_intent_min_examples=2,
        detectors=("component_psi", "label"),
        max_components=8,
        cooldown_hours=0,
    )


class _FixedBaselines:
    def load(self, key: ModelKey) -> Any:
        return drift_baseline() if str(key) == DRIFT_KEY else None


def run_drift_monitor(values: Sequence[bytes], broker_time: bool = False) -> list[Outcome]:
    """`DriftMonitorService.decode` → `handle` for each record → one `flush` (observe)."""
    from driftloop_drift_monitor.service import DriftMonitorService

    settings = _drift_settings()
    service = DriftMonitorService(settings, _FixedBaselines())  # type: ignore[arg-type]
    case = _Case("drift_monitor")

    async def run() -> None:
        for record in _records("interactions.embedded", values, DRIFT_TIME, broker_time):
            event = case.stage("decode", lambda record=record: service.decode(record))
            if event is None:
                continue
            case.ok("decode")
            outputs = await _astage(case, "handle", service.handle(event))
            if outputs is not None and _publishable(case, "handle", outputs, from_flush=False):
                case.ok("handle")
        outputs = await _astage(case, "flush", service.flush(), rejectable=False)
        if outputs is not None and _publishable(case, "flush", outputs, from_flush=True):
            case.ok("flush")

    _run_async(run())
    return case.outcomes


_LOOP: list[asyncio.AbstractEventLoop] = []


def _run_async(step: Any) -> Any:
    """Run a coroutine on one event loop kept for the process (a loop, and the thread
    pool behind `asyncio.to_thread`, per case cost more than most cases)."""
    if not _LOOP or _LOOP[0].is_closed():
        _LOOP[:] = [asyncio.new_event_loop()]
        atexit.register(_LOOP[0].close)
    return _LOOP[0].run_until_complete(step)


async def _astage(case: _Case, name: str, step: Any, *, rejectable: bool = True) -> Any:
    try:
        return await step
    except PermanentError as exc:
        if rejectable:
            case.outcomes.append(Outcome(case.target, name, "rejected", exc.code, str(exc)))
        else:
            case._crash(name, exc)
    except Exception as exc:
        case._crash(name, exc)
    return None


# -- collector


class FakeEncoder:
    """Deterministic (n, 384) float32 vectors, like `TextEncoder` without the model.

    Like the real tokenizer (a Rust library), it cannot take text that is not valid
    Unicode: a lone surrogate raises `TypeError` there, so it does here."""

    info = EncoderInfo(id="fake", precision="fp32")
    loaded = True

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        rows = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError("TextInputSequence must be str")
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise TypeError("TextInputSequence must be str") from exc
            rows.append(np.random.default_rng(zlib.crc32(data)).normal(size=384))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), 384)


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


COLLECTOR_NOW = EXAMPLE_TIME + timedelta(minutes=1)
"""The collector's clock (and the broker's time of the records): just after the
examples' events, so a range check around the broker's time keeps valid pieces."""


@functools.cache
def _collector_settings() -> Any:
    """The collector's settings (its store is passed in, so `store_url` is unused)."""
    from driftloop_collector.settings import CollectorSettings

    return CollectorSettings(store_url="memory://unused", wrapup_wait_s=60, settle_s=1)


def run_collector(values: Sequence[bytes], broker_time: bool = False) -> list[Outcome]:
    """`Collector.decode` (Genesys parsing) → `handle` (assemble) for each record, then
    `flush` (fake encoder, a real `InteractionStore` in a temporary folder) until every
    conversation is out: the clock jumps past `max_wait`."""
    from driftloop_collector.service import Collector
    from driftloop_common.runtime.metrics import LoopMetrics
    from driftloop_common.storage.interactions import InteractionStore

    folder = tempfile.mkdtemp(prefix="fuzz-store-")
    case = _Case("collector")
    try:
        clock = _Clock(COLLECTOR_NOW)
        settings = _collector_settings()
        collector = Collector(
            settings,
            encoder=FakeEncoder(),  # type: ignore[arg-type]
            store=InteractionStore(folder),
            metrics=LoopMetrics("collector"),
            clock=clock,
        )

        async def run() -> None:
            records = _records("interactions.raw", values, COLLECTOR_NOW, broker_time)
            for record in records:
                piece = case.stage("decode", lambda record=record: collector.decode(record))
                if piece is None:
                    continue
                case.ok("decode")
                outputs = await _astage(case, "handle", collector.handle(piece))
                if outputs is not None and _publishable(case, "handle", outputs, from_flush=False):
                    case.ok("handle")
            clock.now += timedelta(seconds=settings.max_wait_s + settings.wrapup_wait_s + 10)
            for _ in range(4):  # a flush embeds at most max_flush_conversations
                outputs = await _astage(case, "flush", collector.flush(), rejectable=False)
                if outputs is None or not _publishable(case, "flush", outputs, from_flush=True):
                    return
                if not outputs:
                    break
                case.ok("flush")

        _run_async(run())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return case.outcomes


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class FuzzCase:
    """What one run of a target consumes: records in offset order on one partition, on a
    fresh service; `broker_time`: they carry Kafka's append time (LogAppendTime)."""

    records: tuple[bytes, ...]
    broker_time: bool = False


@dataclass(frozen=True)
class Target:
    name: str
    records: Callable[[], st.SearchStrategy[list[bytes]]]
    run: Callable[[Sequence[bytes], bool], list[Outcome]]
    what: str

    def cases(self) -> st.SearchStrategy[FuzzCase]:
        return st.builds(FuzzCase, self.records().map(tuple), st.booleans())


def _one(strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    return strategy.map(lambda value: [value])


ACCEPTED_BY_AUDITOR = tuple(
    cls
    for cls in EVENT_CLASSES
    if cls.model_fields["event_type"].default
    not in {"interaction.raw", "interaction.embedded", "prediction", "audit"}
)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "decode_event",
            lambda: _one(event_records()),
            run_decode_event,
            "driftloop_common.contracts.events.decode_event, then to_bytes → decode_event again",
        ),
        Target(
            "auditor",
            lambda: _one(event_records(ACCEPTED_BY_AUDITOR)),
            run_auditor,
            "driftloop_auditor decode → handle → publish",
        ),
        Target(
            "trainer",
            lambda: _one(event_records([TrainingRequestedEvent])),
            run_trainer,
            "driftloop_trainer.service.decode → SplitConfig().windows(as_of)",
        ),
        Target(
            "evaluator",
            lambda: _one(event_records([ModelTrainedEvent])),
            run_evaluator,
            "driftloop_evaluator.service.decode",
        ),
        Target(
            "drift_monitor",
            drift_records,
            run_drift_monitor,
            "DriftMonitorService.decode → handle → flush (observe)",
        ),
        Target(
            "collector",
            lambda: weighted((4, conversations()), (1, _one(genesys())), (1, _one(junk()))),
            run_collector,
            "Collector.decode (genesys.parse_raw) → handle → flush (fake encoder, real store)",
        ),
    )
}


def field_sweep() -> Iterator[tuple[str, FuzzCase]]:
    """Every seed (EventBridge examples, conversation pieces, a normalized event), every
    field of it, every fixed mutation: `("seed field:mutation", case)`. The case holds the
    mutated message first, then the rest of its conversation (without the piece the seed
    stands for, which would win the de-duplication), so a flush follows."""
    pieces = conversation_pieces()
    for name, tree in seeds().items():
        kind = _piece_kind(name, tree)
        rest = [to_json(p) for k, p in pieces.items() if k != kind and kind != "normalized"]
        for path in paths(tree):
            original = _get(tree, path)
            for mutation_kind, value in mutation_values(original):
                mutation = Mutation(path, mutation_kind, value)
                yield f"{name} {mutation}", FuzzCase((to_json(apply(tree, mutation)), *rest))


def batched(
    sweep: Iterator[tuple[str, FuzzCase]], size: int
) -> Iterator[tuple[list[tuple[str, FuzzCase]], FuzzCase]]:
    """Sweep cases `size` at a time as one case: each one's conversation id made unique
    (so one collector assembles them side by side and one flush embeds them together),
    with the cases it came from, to re-run one by one when a batch crashes."""
    batch: list[tuple[str, FuzzCase]] = []
    for item in sweep:
        batch.append(item)
        if len(batch) == size:
            yield batch, _merge(batch)
            batch = []
    if batch:
        yield batch, _merge(batch)


def _merge(batch: list[tuple[str, FuzzCase]]) -> FuzzCase:
    records = []
    for n, (_, case) in enumerate(batch):
        unique = f"{CID[:-8]}{n:08x}".encode()
        records += [r.replace(CID.encode(), unique) for r in case.records]
    return FuzzCase(tuple(records))


def _piece_kind(name: str, tree: dict[str, Any]) -> str:
    if name.startswith("piece:"):
        return name.removeprefix("piece:")
    if name == "normalized":
        return "normalized"
    detail_type = str(tree.get("detail-type", ""))
    return {"customer.start": "start", "customer.end": "end"}.get(
        detail_type.rpartition("}.")[2], ""
    )


def warm_up() -> None:
    """Import what every target imports and build the drift baseline, so the first
    case's time is the case's (the trainer's decode imports MLflow: seconds)."""
    trainer_decode()
    drift_baseline()
    for name in TARGETS:
        run(name, [b"{}"])


def run(target: str, case: FuzzCase | Sequence[bytes]) -> CaseResult:
    """Run one case through `target`; warnings stay warnings (as in production, not the
    errors pytest makes them) and the services' log lines are not printed."""
    if not isinstance(case, FuzzCase):
        case = FuzzCase(tuple(case))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            outcomes = TARGETS[target].run(case.records, case.broker_time)
        finally:
            logging.disable(logging.NOTSET)
    return CaseResult(target, case, outcomes, time.perf_counter() - started)


_ROOT = Path(__file__).resolve().parents[2]


def _where(exc: BaseException) -> str:
    """`path:line in function` of the innermost frame in the project's own code (the
    libraries and services, not this harness), e.g. `libs/…/drift/window.py:109 in _offer`."""
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if _ROOT in path.parents and "tests" not in path.relative_to(_ROOT).parts[:1]:
            if ".venv" not in path.parts:
                found = f"{path.relative_to(_ROOT)}:{frame.lineno} in {frame.name}"
    return found


def _get(tree: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _short(value: Any, limit: int) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
