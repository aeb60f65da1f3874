"""Error bodies as Genesys Cloud writes them.

API errors: `{message, code, status, messageWithParams, messageParams, contextId,
details: [{errorCode, fieldName, entityId, entityName}], errors: []}` (+ `limit` on a 429),
with a fresh `contextId` each time. The token endpoint answers OAuth's shape instead:
`{error, description, error_description}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse

# status → Genesys `code` (the strings its API answers with)
CODES: dict[int, str] = {
    400: "bad.request",
    401: "bad.credentials",
    403: "missing.permissions",
    404: "not.found",
    405: "method.not.allowed",
    409: "conflict",
    413: "request.entity.too.large",
    415: "unsupported.media.type",
    429: "too.many.requests",
    500: "internal.server.error",
    502: "bad.gateway",
    503: "service.unavailable",
    504: "gateway.timeout",
}


class ApiError(Exception):
    """Raised by a route; answered as a Genesys error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "error")
        self.details = list(details)
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.message, code=self.code, details=self.details, headers=self.headers
        )


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Sequence[Mapping[str, Any]] = (),
    limit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": message,
        "code": code or CODES.get(status, "error"),
        "status": status,
        "messageWithParams": message,
        "messageParams": {},
        "contextId": str(uuid.uuid4()),
        "details": [dict(d) for d in details],
        "errors": [],
    }
    if limit is not None:
        body["limit"] = dict(limit)
    return body


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **fields: Any
) -> JSONResponse:
    """`error_body(status, message, **fields)` as a response (`code`, `details`, `limit`)."""
    body = error_body(status, message, **fields)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "description": description, "error_description": description},
        status_code=status,
    )


def not_found(kind: str, entity_id: str) -> ApiError:
    return ApiError(
        404,
        f"{kind} {entity_id} not found",
        details=[{"errorCode": "not.found", "entityId": entity_id, "entityName": kind}],
    )


def conflict(message: str, entity_id: str) -> ApiError:
    return ApiError(409, message, details=[{"errorCode": "conflict", "entityId": entity_id}])


def bad_request(message: str, field: str | None = None) -> ApiError:
    detail = {"errorCode": "invalid.value"} | ({"fieldName": field} if field else {})
    return ApiError(400, message, details=[detail])
