"""Why a version answered what it did: `POST /v2/models/{name}[/versions/{v}]/explain`.

The body is the infer body of the Open Inference Protocol (`oip.py`): a `BYTES` input named
`text` for a text model, one named column per feature for a tabular one; at most
`MAX_EXPLAIN_ROWS` rows (422 above). The answer, one explanation per row, in request order:

    {"model_name", "model_version", "id"?, "explanations": [...], "note"?}

- tabular: `{"score", "attributions": {feature: value}}`, from the version's own
  `explain` (`TabularModel.explain`): per feature, the prediction minus the prediction
  with that feature set to its training baseline (median or most frequent value).
- text: `{"label", "confidence", "tokens": [{"token", "position", "effect"}],
  "tokens_total", "nearest": []}`. `tokens` by occlusion: the text is split on white
  space, each of its first `MAX_TOKENS` tokens is dropped in turn and the text re-scored;
  `effect` is how much the probability of the answered label falls without the token
  (negative: the token argued against it); tokens are ordered by effect, largest first. A
  model without class probabilities counts a variant whose label changes as losing all
  its confidence (an upper bound of the drop). All variants of a request are scored in one
  call through the version's batcher (not `Loaded.score`: no shadow scores them).
  `nearest`: the version's training examples closest to the text (a stratified sample
  the trainer keeps with the version, `ExampleBank`), `{"label", "similarity"}` each,
  most similar first, with their `text` only where `DRIFTLOOP_EXPLAIN_TEXTS` is on (they
  are other customers' words); empty, with a `note`, for a version that keeps none
  (older or fine-tuned ones).

Explanations are not predictions: no `prediction` event is published (the occluded
variants would skew the rolling confidence the rollback-watcher guards). Without a version
the champion explains; `/versions/{v}` may name the champion or the staged (shadow or
canary) version. The token, body limit and errors are infer's (`{"error"}`: 400, 401, 404,
413, 422, 503, 500 when the model fails); texts and tokens are never logged.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from driftloop_common.contracts.events import describe_validation_error
from driftloop_predictor.batching import ModelFailedError, Scored
from driftloop_predictor.guards import ErrorRoute, Guards, OipError, add_versioned_routes
from driftloop_predictor.models import Loaded
from driftloop_predictor.oip import InferRequest, records_of, scores_of, texts_of
from driftloop_predictor.scoring import call_model, features_of, is_tabular

__all__ = ["MAX_EXPLAIN_ROWS", "MAX_TOKENS", "NO_EXAMPLES", "explain_router", "token_effects"]

log = logging.getLogger(__name__)

MAX_TOKENS = 64
"""Tokens occluded per text (one model input each); the rest of a longer text stays put."""
MAX_EXPLAIN_ROWS = 16
"""Rows per explain request: a text costs up to `MAX_TOKENS` + 1 model inputs."""
NO_EXAMPLES = (
    "nearest training examples are not available: this version keeps no training examples "
    "(trained before they were kept, or fine-tuned)"
)
NEAREST = 5
"""Training examples shown per explained text."""


def occluded(text: str) -> tuple[list[str], list[str]]:
    """The tokens of `text` (white space split) and, per token among the first
    `MAX_TOKENS`, the text without it."""
    tokens = text.split()
    variants = [" ".join(tokens[:i] + tokens[i + 1 :]) for i in range(min(len(tokens), MAX_TOKENS))]
    return tokens, variants


def token_effects(original: Scored, variants: Scored, tokens: list[str]) -> list[dict[str, Any]]:
    """Per occluded token, the drop of the answered label's probability (`original` is one
    row, `variants` one row per occluded token), largest first (ties: text order)."""
    label, confidence = original.labels[0], original.confidences[0]
    if original.proba is not None and variants.proba is not None and label in variants.classes:
        column = variants.classes.index(label)
        kept = np.asarray(variants.proba, dtype=np.float64)[:, column]
        base = float(np.asarray(original.proba, dtype=np.float64)[0, column])
    else:  # only the best label: a changed label lost (at most) all of it
        pairs = zip(variants.labels, variants.confidences, strict=True)
        kept = np.array([c if lab == label else 0.0 for lab, c in pairs])
        base = confidence
    effects = [
        {"token": tokens[i], "position": i, "effect": base - float(kept[i])}
        for i in range(len(variants.labels))
    ]
    return sorted(effects, key=lambda e: (-e["effect"], e["position"]))


async def unrecorded(loaded: Loaded, items: list[Any]) -> Scored:
    """`items` scored by `loaded`'s batcher, not by `Loaded.score`: what an explanation
    scores is no answer, so no shadow scores it after; a failing model is a 500."""
    try:
        return await loaded.batcher.submit(items)
    except ModelFailedError as exc:  # named by type, never its input
        log.error("%s v%s failed on a batch: %s", loaded.name, loaded.version, exc)
        raise OipError(500, f"{loaded.name} v{loaded.version} failed on this request") from None


async def nearest_examples(
    loaded: Loaded, texts: list[str], show_texts: bool
) -> list[list[dict[str, Any]]] | None:
    """Per text, its nearest training examples; None when the version keeps none."""
    model = loaded.model
    bank = getattr(model, "examples", None)
    if bank is None or not callable(getattr(model, "nearest_examples", None)):
        return None
    found = await call_model(model.nearest_examples, texts, NEAREST)
    return [
        [
            {"label": bank.labels[i], "similarity": round(similarity, 4)}
            | ({"text": bank.texts[i]} if show_texts else {})
            for i, similarity in rows
        ]
        for rows in found
    ]


def explain_router(guards: Guards, show_texts: bool = False) -> APIRouter:
    router = APIRouter(route_class=ErrorRoute)
    limits = guards.limits

    async def body(request: Request) -> InferRequest:
        raw = await guards.read(request)
        try:
            parsed = InferRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise OipError(400, describe_validation_error(exc)) from None
        rows = max(max(i.shape[0], len(i.data)) for i in parsed.inputs)
        if rows > MAX_EXPLAIN_ROWS:
            raise OipError(422, f"at most {MAX_EXPLAIN_ROWS} rows per explain request, got {rows}")
        return parsed

    async def explain_records(loaded: Loaded, parsed: InferRequest) -> list[dict[str, Any]]:
        model = loaded.model
        if not callable(getattr(model, "explain", None)):
            raise OipError(400, f"{loaded.name} v{loaded.version} gives no attributions")
        records = records_of(parsed, limits.max_batch, features_of(model))
        scores = scores_of(loaded, await unrecorded(loaded, records))
        try:
            attributions = await call_model(model.explain, records)
        except ModelFailedError as exc:  # named by type, never its input
            log.error("%s v%s failed to explain: %s", loaded.name, loaded.version, exc)
            raise OipError(500, f"{loaded.name} v{loaded.version} failed on this request") from None
        if len(attributions) != len(records):
            raise OipError(500, f"{loaded.name} v{loaded.version} explained the wrong rows")
        return [
            {"score": score, "attributions": {f: float(v) for f, v in row.items()}}
            for score, row in zip(scores, attributions, strict=True)
        ]

    async def explain_texts(loaded: Loaded, parsed: InferRequest) -> list[dict[str, Any]]:
        texts = texts_of(parsed, limits.max_batch)
        split = [occluded(text) for text in texts]
        batch = [*texts, *(v for _, variants in split for v in variants)]
        answer = await unrecorded(loaded, batch)
        try:
            nearest = await nearest_examples(loaded, texts, show_texts)
        except ModelFailedError as exc:
            log.error("%s v%s failed finding examples: %s", loaded.name, loaded.version, exc)
            raise OipError(500, f"{loaded.name} v{loaded.version} failed on this request") from None
        explanations, start = [], len(texts)
        for row, (tokens, variants) in enumerate(split):
            end = start + len(variants)
            original = answer.rows(row, row + 1)
            explanations.append(
                {
                    "label": original.labels[0],
                    "confidence": original.confidences[0],
                    "tokens": token_effects(original, answer.rows(start, end), tokens),
                    "tokens_total": len(tokens),
                    "nearest": nearest[row] if nearest is not None else [],
                }
            )
            start = end
        return explanations

    def served(name: str, version: int | None) -> Loaded:
        """The champion, or the version asked for: the champion or the staged one."""
        loaded = guards.model(name)
        staged = guards.models.staged(name)
        if version is None or version == loaded.version:
            return loaded
        if staged is not None and staged.version == version:
            return staged
        raise OipError(404, f"{name} v{version} is not served; v{loaded.version} is")

    async def explain(request: Request, name: str, version: int | None) -> JSONResponse:
        guards.authorize(request)
        loaded = served(name, version)
        parsed = await body(request)
        answer: dict[str, Any] = {"model_name": name, "model_version": str(loaded.version)}
        if parsed.id is not None:
            answer["id"] = parsed.id
        if is_tabular(loaded.key.model_type):
            answer["explanations"] = await explain_records(loaded, parsed)
        else:
            answer["explanations"] = await explain_texts(loaded, parsed)
            if getattr(loaded.model, "examples", None) is None:
                answer["note"] = NO_EXAMPLES
        return JSONResponse(answer)

    add_versioned_routes(router, "explain", explain)

    return router
