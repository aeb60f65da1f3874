"""One error tree for every driftloop service.

    DriftloopError
     ├── RetryableError      the same input may succeed later (broker down, 5xx, timeout):
     │                       do not commit the offset; retry, then crash so Kafka redelivers
     ├── PermanentError      this input will never succeed: send it to `<topic>.dlq`, move on
     │    ├── InvalidEventError   the bytes are not a valid event of the expected type
     │    ├── HandlerFailedError  its handler failed `max_failures` times with a bug
     │    └── GenesysApiError     Genesys Cloud refused the request for good (a 4xx
     │                            or a 501) with its error body; `status == 409`: a conflict
     ├── CannotTrainError    a valid request whose data cannot make a model: answered with
     │                       `training.failed` (neither retried nor dead-lettered)
     └── ConfigError         the service is misconfigured: fail fast at start-up

Library errors (aiokafka, MLflow, httpx) are translated at the adapter with
`raise ... from exc`, so handlers and the service loop only ever see this tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DriftloopError(Exception):
    """Base of every error driftloop raises on purpose."""


class RetryableError(DriftloopError):
    """The operation may succeed if tried again later."""


class PermanentError(DriftloopError):
    """The input can never be processed; it belongs in the dead-letter queue.

    `code` is a short, fixed token (safe as a metric label); the message is the
    human-readable reason stored with the dead letter.
    """

    code: str = "permanent"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidEventError(PermanentError):
    """The message could not be decoded or validated as the expected event."""

    code = "invalid_event"


class HandlerFailedError(PermanentError):
    """A handler raised an unexpected exception (not one of ours) on the same input too many
    times: a bug this input triggers. The loop dead-letters the input instead of crash-looping."""

    code = "handler_failed"

    def __init__(self, message: str, *, exception_type: str, failures: int) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.failures = failures


class GenesysApiError(PermanentError):
    """Genesys Cloud refused a request, and the same request would be refused again: a 4xx
    other than 401 (after one token refresh), 408 and 429, or a 501.

    `status` is the HTTP status (`409`: a conflict, such as publishing a version that is still
    training or already published); `code` Genesys's own (`bad.request`, `not.found`…, or the
    OAuth `error` such as `invalid_client`); `context_id` the id Genesys support asks for; `body`
    the whole error body (`message`, `details: [{errorCode, fieldName…}]`…). The message
    never carries a token or a secret.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        context_id: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code or f"genesys_{status}")
        self.status = status
        self.context_id = context_id
        self.body: dict[str, Any] = dict(body or {})

    @property
    def details(self) -> list[dict[str, Any]]:
        """Genesys's `details[]`: `{errorCode, fieldName, entityId, entityName}` each."""
        details = self.body.get("details")
        return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


class CannotTrainError(DriftloopError):
    """The data of a valid training request cannot make a model (too few rows, one class):
    the trainer answers with `training.failed` naming `reason`, with the `counts` it saw."""

    def __init__(self, reason: str, counts: dict[str, int]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counts = counts


class ConfigError(DriftloopError):
    """The configuration is missing or contradictory; the service cannot start."""
