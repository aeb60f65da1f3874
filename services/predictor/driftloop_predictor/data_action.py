"""Genesys Cloud Architect data action: `POST /genesys/data-action/{name}`, flat JSON in and out.

A web services data action maps flat contracts best (its translation map reads one
JSONPath per output field), so this route speaks flat JSON:

    text model     {"text": "…", "conversationId": "…"}
                   → {"label", "confidence", "modelVersion", "modelName"}
    tabular model  {"<feature>": value, …, "conversationId": "…"}
                   → {"label": "score", "confidence", "score", "modelVersion", "modelName"}

`conversationId` is optional; it picks a canary's share (sticky per conversation) and
becomes the conversation id of the `prediction` event.
A tabular body holds one field per feature the version reads (a number, a string, or null
for a missing value); other fields are ignored. `deploy/genesys/` holds the action's
contract, ready to import.

Architect takes the action's failure path on any non-2xx answer, so every failure is one,
with `{"error": "…"}`: 400 (not a JSON object, no or an empty `text`, a missing or
malformed feature), 401 (the bearer token, compared in constant time), 404 (no such model
here), 413 (the body limit), 503 (not loaded yet), 500 (the model failed). The text is
never logged.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from driftloop_predictor.guards import ErrorRoute, Guards, OipError
from driftloop_predictor.models import Loaded
from driftloop_predictor.oip import OnPredictions, scored, scores_of
from driftloop_predictor.scoring import features_of, is_tabular

__all__ = ["CONVERSATION_FIELD", "TEXT_FIELD", "data_action_router"]

TEXT_FIELD = "text"
CONVERSATION_FIELD = "conversationId"


def _flat_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OipError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise OipError(400, "the body must be a JSON object")
    return body


def conversation_of(body: dict[str, Any]) -> str | None:
    value = body.get(CONVERSATION_FIELD)
    if value is not None and not isinstance(value, str):
        raise OipError(400, f"{CONVERSATION_FIELD} must be a string")
    return value or None


def text_of(body: dict[str, Any]) -> str:
    text = body.get(TEXT_FIELD)
    if text is None:
        raise OipError(400, f"the body needs a {TEXT_FIELD!r} field")
    if not isinstance(text, str):
        raise OipError(400, f"{TEXT_FIELD!r} must be a string")
    if not text.strip():
        raise OipError(400, f"{TEXT_FIELD!r} is empty")
    return text


def record_of(body: dict[str, Any], features: list[str] | None) -> dict[str, Any]:
    """One record from the flat body: every feature the version reads (all fields but
    `conversationId` when it does not say which)."""
    if features is None:
        features = [name for name in body if name != CONVERSATION_FIELD]
    if missing := [name for name in features if name not in body]:
        raise OipError(400, f"missing feature field(s) {missing}")
    record = {name: body[name] for name in features}
    if wrong := [
        name
        for name, value in record.items()
        if isinstance(value, bool) or not isinstance(value, str | int | float | None)
    ]:
        raise OipError(400, f"feature field(s) {wrong} must be a number, a string or null")
    return record


def data_action_router(guards: Guards, on_predictions: OnPredictions) -> APIRouter:
    router = APIRouter(route_class=ErrorRoute)

    def answer(loaded: Loaded, label: str, confidence: float) -> dict[str, Any]:
        return {
            "label": label,
            "confidence": confidence,
            "modelVersion": str(loaded.version),
            "modelName": loaded.name,
        }

    @router.post("/genesys/data-action/{name}")
    async def data_action(request: Request, name: str) -> JSONResponse:
        guards.authorize(request)
        if guards.models.key_of(name) is None:
            raise OipError(404, f"no model {name!r} here; served: {sorted(guards.models.keys)}")
        body = _flat_body(await guards.read(request))
        conversation = conversation_of(body)
        loaded = guards.model(name, conversation)  # a canary's, for its share
        if is_tabular(loaded.key.model_type):
            record = record_of(body, features_of(loaded.model))
            result = await scored(loaded, [record])
            (score,) = scores_of(loaded, result)
            flat = {**answer(loaded, result.labels[0], result.confidences[0]), "score": score}
        else:
            result = await scored(loaded, [text_of(body)])
            flat = answer(loaded, result.labels[0], result.confidences[0])
        on_predictions(loaded, result.labels, result.confidences, conversation)
        return JSONResponse(flat)

    return router
