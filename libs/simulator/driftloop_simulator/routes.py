"""The simulator's routes: the token endpoint, the NLU domain API, the model-config API of
the integration guide, and the admin API. Handlers are thin: `SimulatorState` does the work.

Every handler is `async def`, so it runs on the event loop (never in a thread pool) and the
in-memory state needs no lock.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from driftloop_simulator.errors import bad_request, oauth_error
from driftloop_simulator.schemas import (
    AdminDomain,
    AdminModel,
    DetectBody,
    DomainBody,
    FaultUpdate,
    ModelPatch,
    TrainingDataBody,
    VersionBody,
)
from driftloop_simulator.state import ML, NLU, SimulatorState, page

Json = dict[str, Any]
PageNumber = Annotated[int, Query(alias="pageNumber", ge=1)]
IncludeUtterances = Annotated[bool, Query(alias="includeUtterances")]
VERSION = f"{NLU}/{{domainId}}/versions/{{versionId}}"


def _listing(
    state: SimulatorState,
    items: list[Json],
    *,
    path: str,
    page_number: int,
    page_size: int,
    query: dict[str, str] | None = None,
) -> Json:
    if page_size > state.settings.max_page_size:
        raise bad_request(
            f"pageSize {page_size} is above the maximum of {state.settings.max_page_size}",
            "pageSize",
        )
    return page(items, path=path, page_number=page_number, page_size=page_size, query=query)


PageSize = Annotated[int, Query(alias="pageSize", ge=1)]


def oauth_routes(state: SimulatorState) -> APIRouter:
    router = APIRouter(tags=["oauth"])

    @router.post("/oauth/token", summary="OAuth client credentials (HTTP Basic + form body)")
    async def token(request: Request) -> JSONResponse:
        client_id, secret = _basic(request.headers.get("authorization"))
        if client_id is None:
            return oauth_error(401, "invalid_client", "client authentication is required")
        expected = state.credentials.get(client_id)
        if expected is None or not secrets.compare_digest(expected, secret or ""):
            return oauth_error(401, "invalid_client", "authentication failed")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        if grant != "client_credentials":
            return oauth_error(
                400, "unsupported_grant_type", f"grant type {grant!r} is not supported"
            )
        ttl = state.settings.token_ttl_s
        access_token = state.tokens.issue(client_id, state.now(), ttl)
        state.stats.tokens_issued += 1
        body = {"access_token": access_token, "token_type": "bearer", "expires_in": int(ttl)}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return router


def _basic(authorization: str | None) -> tuple[str | None, str | None]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep and client_id else (None, None)


def nlu_routes(state: SimulatorState) -> APIRouter:
    router = APIRouter(tags=["languageunderstanding"])

    @router.post(NLU, summary="Create a domain")
    async def create_domain(body: DomainBody) -> Json:
        domain = state.create_domain(
            name=body.name, language=body.language, description=body.description
        )
        return domain.to_wire()

    @router.get(NLU, summary="List domains (paged)")
    async def list_domains(page_number: PageNumber = 1, page_size: PageSize = 25) -> Json:
        domains = [d.to_wire() for d in state.domains.values()]
        return _listing(state, domains, path=NLU, page_number=page_number, page_size=page_size)

    @router.get(f"{NLU}/{{domainId}}", summary="Get a domain")
    async def get_domain(domainId: str) -> Json:
        return state.domain(domainId).to_wire()

    @router.post(f"{NLU}/{{domainId}}/versions", summary="Create a version (NluDomainVersion)")
    async def create_version(domainId: str, body: VersionBody) -> Json:
        return state.create_version(domainId, body).to_wire()

    @router.get(f"{NLU}/{{domainId}}/versions", summary="List versions (paged)")
    async def list_versions(
        domainId: str,
        include_utterances: IncludeUtterances = False,
        page_number: PageNumber = 1,
        page_size: PageSize = 25,
    ) -> Json:
        versions = [
            v.to_wire(include_utterances=include_utterances) for v in state.versions(domainId)
        ]
        query = {"includeUtterances": "true"} if include_utterances else None
        path = f"{NLU}/{domainId}/versions"
        return _listing(
            state, versions, path=path, page_number=page_number, page_size=page_size, query=query
        )

    @router.get(VERSION, summary="Get a version")
    async def get_version(
        domainId: str, versionId: str, include_utterances: IncludeUtterances = False
    ) -> Json:
        return state.version(domainId, versionId).to_wire(include_utterances=include_utterances)

    @router.put(VERSION, summary="Replace a version (409 once published or while training)")
    async def put_version(domainId: str, versionId: str, body: VersionBody) -> Json:
        return state.update_version(domainId, versionId, body).to_wire()

    @router.delete(VERSION, status_code=204, summary="Delete a version")
    async def delete_version(domainId: str, versionId: str) -> Response:
        state.delete_version(domainId, versionId)
        return Response(status_code=204)

    @router.post(f"{VERSION}/train", status_code=202, summary="Train a version")
    async def train(domainId: str, versionId: str) -> Json:
        version = state.train(domainId, versionId)
        return {
            "message": "Training of the NLU domain version has started",
            "version": version.to_wire(include_utterances=False),
        }

    @router.post(f"{VERSION}/publish", summary="Publish a trained version")
    async def publish(domainId: str, versionId: str) -> Json:
        return state.publish(domainId, versionId).to_wire(include_utterances=False)

    @router.post(f"{VERSION}/detect", summary="Detect intents in a text")
    async def detect(domainId: str, versionId: str, body: DetectBody) -> Json:
        training = state.trained(domainId, versionId)
        version = state.version(domainId, versionId)
        intents = [
            {"name": name, "probability": round(p, 6), "entities": []}
            for name, p in training.model.detect(body.input.text)
        ]
        return {
            "version": {"id": version.id, "selfUri": version.self_uri},
            "input": body.input.model_dump(exclude_none=True),
            "output": {"intents": intents, "dialogActs": []},
        }

    @router.get(f"{VERSION}/report", summary="Quality report of a trained version")
    async def report(domainId: str, versionId: str) -> Json:
        training = state.trained(domainId, versionId)
        version = state.version(domainId, versionId)
        return {"version": {"id": version.id, "selfUri": version.self_uri}} | (
            training.report.to_wire()
        )

    return router


def ml_routes(state: SimulatorState) -> APIRouter:
    """The model-config API as the integration guide describes it (not Genesys's public API)."""
    router = APIRouter(tags=["ml (integration guide)"])

    @router.post(f"{ML}/trainingdata", summary="Upload one chunk of interactions")
    async def upload(body: TrainingDataBody) -> Json:
        return state.upload(body).to_wire(include_interactions=False)

    @router.get(f"{ML}/trainingdata", summary="List uploads (paged, without interactions)")
    async def list_uploads(
        model_id: Annotated[str | None, Query(alias="modelId")] = None,
        page_number: PageNumber = 1,
        page_size: PageSize = 25,
    ) -> Json:
        found = [
            d.to_wire(include_interactions=False)
            for d in state.training_data.values()
            if model_id is None or d.model_id == model_id
        ]
        query = {"modelId": model_id} if model_id else None
        path = f"{ML}/trainingdata"
        return _listing(
            state, found, path=path, page_number=page_number, page_size=page_size, query=query
        )

    @router.get(f"{ML}/trainingdata/{{trainingDataId}}", summary="One upload")
    async def get_upload(trainingDataId: str) -> Json:
        return state.uploaded(trainingDataId).to_wire()

    @router.get(f"{ML}/models/{{modelId}}", summary="A model's configuration")
    async def get_model(modelId: str) -> Json:
        return state.model(modelId).to_wire()

    @router.patch(f"{ML}/models/{{modelId}}", summary="Set trainingDataId, status, version")
    async def patch_model(modelId: str, patch: ModelPatch) -> Json:
        return state.patch_model(modelId, patch).to_wire()

    return router


def admin_routes(state: SimulatorState) -> APIRouter:
    """Not Genesys: how tests switch faults, read counters and seed entities. No auth."""
    router = APIRouter(prefix="/admin", tags=["admin"])

    @router.get("/faults")
    async def get_faults() -> Json:
        return state.faults.current.model_dump()

    @router.post("/faults")
    async def set_faults(update: FaultUpdate) -> Json:
        current = state.faults.update(update.changes())
        if update.expire_tokens:
            state.tokens.expire_all()
        return current.model_dump()

    @router.delete("/faults")
    async def clear_faults() -> Json:
        return state.faults.clear().model_dump()

    @router.get("/stats")
    async def get_stats() -> Json:
        return state.stats.snapshot()

    @router.delete("/stats")
    async def reset_stats() -> Json:
        state.stats.reset()
        return state.stats.snapshot()

    @router.post("/domains")
    async def seed_domain(body: AdminDomain) -> Json:
        return state.create_domain(
            domain_id=body.id, name=body.name, language=body.language
        ).to_wire()

    @router.post("/models")
    async def seed_model(body: AdminModel) -> Json:
        return state.create_model(model_id=body.id, name=body.name).to_wire()

    return router


def health_routes() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> Json:
        return {"status": "ok", "service": "genesys-simulator"}

    return router
