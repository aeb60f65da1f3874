"""Genesys Cloud Bot Connector (v1) for intent models: `POST /genesys/bot-connector/{name}`.

Genesys posts `{botSessionId, inputMessage: {text}, …}`; the answer is
`{botState, intent, confidence, replymessages, slotValues, parameters, errorInfo}`:
`Complete` with the intent found, `Failed` (with `errorInfo`) when there is no text, the
answer is out of scope (below the version's abstain floor, where abstain is on), the
model is not loaded or it fails, so the Architect flow takes its failure path instead of
waiting. `parameters.model_version` names the version that answered. The same bearer
token and body limit as the inference routes apply; the bot session id is the
conversation id of the `prediction` event; the text is never logged.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftloop_common.contracts.events import ModelType, describe_validation_error
from driftloop_predictor.batching import ModelFailedError
from driftloop_predictor.guards import ErrorRoute, Guards, OipError
from driftloop_predictor.oip import OnPredictions

__all__ = ["BotRequest", "bot_connector_router"]

log = logging.getLogger(__name__)


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = ""
    type: str = "Text"


class BotRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    botSessionId: str = Field(min_length=1)
    inputMessage: InputMessage
    languageCode: str | None = None


def failed(code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "botState": "Failed",
            "replymessages": [],
            "errorInfo": {"errorCode": code, "errorMessage": message},
        }
    )


def bot_connector_router(guards: Guards, on_predictions: OnPredictions) -> APIRouter:
    router = APIRouter(route_class=ErrorRoute)

    @router.post("/genesys/bot-connector/{name}")
    async def post_utterance(request: Request, name: str) -> JSONResponse:
        guards.authorize(request)
        key = guards.models.key_of(name)
        if key is None or key.model_type is not ModelType.INTENT:
            raise OipError(404, f"no intent model {name!r} here")
        try:
            bot = BotRequest.model_validate_json(await guards.read(request))
        except ValidationError as exc:
            raise OipError(400, describe_validation_error(exc)) from None
        text = bot.inputMessage.text.strip()
        if not text:
            return failed("empty_input", "the input message has no text")
        loaded = guards.models.live(name, bot.botSessionId)  # a canary's, for its share
        if loaded is None:
            return failed("model_not_loaded", f"{name} is not loaded yet")
        try:
            scored = await loaded.score([text])
        except ModelFailedError as exc:  # named by type, never its text
            log.error("%s v%s failed on a batch: %s", name, loaded.version, exc)
            return failed("model_failed", f"{name} v{loaded.version} failed on this message")
        on_predictions(loaded, scored.labels, scored.confidences, bot.botSessionId)
        if scored.labels[0] == guards.models.abstain_label:  # below the version's floor
            return failed("out_of_scope", f"no intent above {name} v{loaded.version}'s floor")
        answer: dict[str, Any] = {
            "botState": "Complete",
            "intent": scored.labels[0],
            "confidence": scored.confidences[0],
            "replymessages": [],
            "slotValues": {},
            "parameters": {"model_version": str(loaded.version)},
        }
        return JSONResponse(answer)

    return router
