"""The Open Inference Protocol v2 (KServe, Seldon MLServer, Triton) over the served models.

    GET  /v2/health/live               {"live": true}
    GET  /v2/health/ready              {"ready": bool}            (503 while a model is missing)
    GET  /v2/models/{name}             metadata: name, versions, platform, inputs, outputs
    GET  /v2/models/{name}/ready       {"name", "ready"}
    POST /v2/models/{name}[/versions/{v}]/infer

A text model takes one `BYTES` input named `text` of shape `[N]` (or `[N, 1]`) and
answers `label` (BYTES) and `confidence` (FP32), with `model_version` always; with
`parameters.top_k` = k also `top_k_labels` and `top_k_confidences` of shape `[N, k]`;
`parameters.conversation_id` goes into the `prediction` events. A tabular model
(`lead-score`, see `scoring.py`) takes its records as named columns, the protocol's way:
one input per feature, named after it, of shape `[N]` (or `[N, 1]`), datatype `FP32`,
`FP64`, `INT32`, `INT64` (numbers) or `BYTES` (strings), `null` for a missing value (imputed
as in training); every feature the version reads must be there (400 names the missing
ones), other inputs are passed along and ignored by the model. It answers `score` (FP32,
shape `[N]`); `top_k` is refused. `name` is the registered model (`intent-en-us`). Errors
are 4xx (503 while not loaded, 500 when the model itself fails) with `{"error": "…"}`.
With an API token set, the `/v2/models` routes need `Authorization: Bearer <token>`
(compared in constant time); the health routes stay open for probes. Bodies above
`max_body_bytes` → 413, more than `max_batch` inputs → 422. Texts are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftloop_common.contracts.events import describe_validation_error
from driftloop_predictor.batching import ModelFailedError, Scored
from driftloop_predictor.guards import ErrorRoute, Guards, OipError, add_versioned_routes
from driftloop_predictor.models import Loaded
from driftloop_predictor.scoring import (
    ScoredRecords,
    feature_datatypes,
    features_of,
    is_tabular,
)

__all__ = [
    "InferRequest",
    "OnPredictions",
    "oip_router",
    "records_of",
    "scored",
    "scores_of",
    "texts_of",
]

log = logging.getLogger(__name__)

PLATFORM = "mlflow_pyfunc"
TEXT_INPUT = "text"


class InferInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)


OnPredictions = Callable[[Loaded, list[str], list[float], str | None], None]


def _values(tensor: InferInput, max_batch: int) -> list[Any]:
    """The values of a `[N]` or `[N, 1]` input, flat; `OipError` (400 / 422)."""
    name = tensor.name
    if len(tensor.shape) == 2 and tensor.shape[1] != 1:
        raise OipError(400, f"input {name!r} must have shape [N] or [N, 1], got {tensor.shape}")
    n = tensor.shape[0]
    if n > max_batch or len(tensor.data) > max_batch:
        raise OipError(
            422, f"at most {max_batch} inputs per request, got {max(n, len(tensor.data))}"
        )
    data = [d[0] if isinstance(d, list) and len(d) == 1 else d for d in tensor.data]
    if n != len(data):
        raise OipError(400, f"input {name!r} has shape {tensor.shape} but {len(data)} values")
    return data


def texts_of(request: InferRequest, max_batch: int) -> list[str]:
    """The texts of a request; `OipError` (400 / 422) naming what is wrong."""
    inputs = [i for i in request.inputs if i.name == TEXT_INPUT]
    if len(inputs) != 1:
        names = [i.name for i in request.inputs]
        raise OipError(400, f"expected one input named {TEXT_INPUT!r}, got {names}")
    text = inputs[0]
    if text.datatype != "BYTES":
        raise OipError(400, f"input {TEXT_INPUT!r} must have datatype BYTES, not {text.datatype}")
    data = _values(text, max_batch)
    if not all(isinstance(d, str) for d in data):
        raise OipError(400, f"input {TEXT_INPUT!r} must hold strings")
    if not data:
        raise OipError(400, f"input {TEXT_INPUT!r} is empty")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


# The datatypes a record column may have, and what each value (or null) must be.
COLUMN_DATATYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "FP32": ("numbers", _is_number),
    "FP64": ("numbers", _is_number),
    "INT32": ("integers", _is_integer),
    "INT64": ("integers", _is_integer),
    "BYTES": ("strings", _is_string),
}


def records_of(
    request: InferRequest, max_batch: int, features: list[str] | None
) -> list[dict[str, Any]]:
    """The records of a tabular request, one input per column (`features`: the columns the
    version needs, None when it does not say); `OipError` (400 / 422) naming what is wrong."""
    columns: dict[str, list[Any]] = {}
    for column in request.inputs:
        if column.name in columns:
            raise OipError(400, f"input {column.name!r} is given twice")
        if column.datatype not in COLUMN_DATATYPES:
            allowed = ", ".join(COLUMN_DATATYPES)
            raise OipError(
                400, f"input {column.name!r} has datatype {column.datatype}; use one of {allowed}"
            )
        kind, valid = COLUMN_DATATYPES[column.datatype]
        data = _values(column, max_batch)
        if not all(value is None or valid(value) for value in data):
            raise OipError(400, f"input {column.name!r} ({column.datatype}) must hold {kind}")
        columns[column.name] = data
    if features is not None and (missing := [f for f in features if f not in columns]):
        raise OipError(400, f"missing input(s) {missing}: this model reads one per feature")
    lengths = {len(data) for data in columns.values()}
    if len(lengths) > 1:
        shapes = {name: len(data) for name, data in columns.items()}
        raise OipError(400, f"every input needs the same number of rows, got {shapes}")
    n = lengths.pop()
    if n == 0:
        raise OipError(400, "the inputs are empty")
    return [{name: data[i] for name, data in columns.items()} for i in range(n)]


async def scored(loaded: Loaded, items: list[Any]) -> Scored:
    """`items` scored by `loaded`'s batcher; a failing model is a 500 naming the version
    (logged by the exception's type, never its text)."""
    try:
        return await loaded.score(items)
    except ModelFailedError as exc:
        log.error("%s v%s failed on a batch: %s", loaded.name, loaded.version, exc)
        raise OipError(500, f"{loaded.name} v{loaded.version} failed on this request") from None


def scores_of(loaded: Loaded, answer: Scored) -> list[float]:
    """The scores of a tabular answer; a 500 when the version was not scored as records."""
    if not isinstance(answer, ScoredRecords):
        log.error("%s v%s is tabular but its batcher scores texts", loaded.name, loaded.version)
        raise OipError(500, f"{loaded.name} v{loaded.version} is not served as a tabular model")
    return list(answer.scores)


def top_k_of(request: InferRequest) -> int:
    """`parameters.top_k` (0: not asked for)."""
    value = (request.parameters or {}).get("top_k", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise OipError(400, "parameters.top_k must be a non-negative integer")
    return value


def top_k_outputs(scored: Scored, k: int) -> list[dict[str, Any]]:
    """`top_k_labels` (BYTES) and `top_k_confidences` (FP32), each of shape `[N, k]`,
    row-major flat as the protocol sends tensors, best first; k above the model's classes
    is cut to them."""
    if scored.proba is None:
        raise OipError(400, "this model gives no class probabilities: top_k is not available")
    k = min(k, len(scored.classes))
    order = np.argsort(-scored.proba, axis=1, kind="stable")[:, :k]
    n = len(order)
    labels = [scored.classes[i] for row in order for i in row]
    confidences = np.take_along_axis(scored.proba, order, axis=1).ravel().tolist()
    return [
        {"name": "top_k_labels", "shape": [n, k], "datatype": "BYTES", "data": labels},
        {"name": "top_k_confidences", "shape": [n, k], "datatype": "FP32", "data": confidences},
    ]


def conversation_of(request: InferRequest) -> str | None:
    value = (request.parameters or {}).get("conversation_id")
    return str(value) if isinstance(value, str | int) and value != "" else None


def oip_router(guards: Guards, on_predictions: OnPredictions) -> APIRouter:
    models, limits = guards.models, guards.limits
    router = APIRouter(route_class=ErrorRoute)
    authorize, model = guards.authorize, guards.model

    async def body(request: Request) -> InferRequest:
        raw = await guards.read(request)
        try:
            return InferRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise OipError(400, describe_validation_error(exc)) from None

    async def infer_texts(loaded: Loaded, parsed: InferRequest) -> list[dict[str, Any]]:
        texts = texts_of(parsed, limits.max_batch)
        k = top_k_of(parsed)
        answer = await scored(loaded, texts)
        on_predictions(loaded, answer.labels, answer.confidences, conversation_of(parsed))
        n = len(texts)
        outputs = [
            {"name": "label", "shape": [n], "datatype": "BYTES", "data": answer.labels},
            {"name": "confidence", "shape": [n], "datatype": "FP32", "data": answer.confidences},
        ]
        return outputs + top_k_outputs(answer, k) if k else outputs

    async def infer_records(loaded: Loaded, parsed: InferRequest) -> list[dict[str, Any]]:
        records = records_of(parsed, limits.max_batch, features_of(loaded.model))
        if top_k_of(parsed):
            raise OipError(
                400, "a tabular model gives a score, not classes: top_k is not available"
            )
        answer = await scored(loaded, records)
        scores = scores_of(loaded, answer)
        on_predictions(loaded, answer.labels, answer.confidences, conversation_of(parsed))
        return [{"name": "score", "shape": [len(scores)], "datatype": "FP32", "data": scores}]

    async def infer(request: Request, name: str, version: int | None) -> JSONResponse:
        authorize(request)
        loaded = model(name)
        staged = models.staged(name)
        if version is not None and version != loaded.version:
            if staged is None or staged.version != version:  # a staged one may be asked by name
                raise OipError(404, f"{name} v{version} is not served; v{loaded.version} is")
            loaded = staged
        parsed = await body(request)
        if version is None:  # a canary answers its share of conversations
            loaded = model(name, conversation_of(parsed))
        answer: dict[str, Any] = {"model_name": name, "model_version": str(loaded.version)}
        if is_tabular(loaded.key.model_type):
            answer["outputs"] = await infer_records(loaded, parsed)
        else:
            answer["outputs"] = await infer_texts(loaded, parsed)
        if parsed.id is not None:
            answer["id"] = parsed.id
        return JSONResponse(answer)

    @router.get("/v2/health/live")
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @router.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = models.all_loaded()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @router.get("/v2/models/{name}")
    async def metadata(request: Request, name: str) -> JSONResponse:
        authorize(request)
        loaded = model(name)
        if is_tabular(loaded.key.model_type):
            columns = feature_datatypes(loaded.model).items()
            inputs = [{"name": f, "datatype": t, "shape": [-1]} for f, t in columns]
            outputs = [{"name": "score", "datatype": "FP32", "shape": [-1]}]
        else:
            inputs = [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}]
            outputs = [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "confidence", "datatype": "FP32", "shape": [-1]},
            ]
        return JSONResponse(
            {
                "name": name,
                "versions": [str(loaded.version)],
                "platform": PLATFORM,
                "inputs": inputs,
                "outputs": outputs,
                "parameters": {"model_key": str(loaded.key)},
            }
        )

    @router.get("/v2/models/{name}/ready")
    async def model_ready(request: Request, name: str) -> JSONResponse:
        authorize(request)
        if models.key_of(name) is None:
            raise OipError(404, f"no model {name!r} here; served: {sorted(models.keys)}")
        ok = models.live(name) is not None
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    add_versioned_routes(router, "infer", infer)

    return router
