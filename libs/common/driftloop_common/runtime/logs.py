"""JSON logging for services (one object per line), plain text for people at a terminal.

Secrets never reach a log line: settings hold them as `SecretStr`, and
`RedactingFormatter` masks any value registered with `redact()` as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

from pythonjsonlogger.json import JsonFormatter

_SECRETS: set[str] = set()
_ORDERED: tuple[str, ...] = ()  # _SECRETS, longest first
_SECRETS_LOCK = threading.Lock()
MASK = "**********"


def redact(*secrets: str | None) -> None:
    """Register values that must never appear in a log line, however short, in every form
    they take in one: as they are, JSON-escaped (a JSON log line escapes quotes, backslashes
    and non-ASCII) and URL-encoded (a password inside a URI)."""
    global _ORDERED
    forms = {form for s in secrets if s for form in _spellings(s)}
    with _SECRETS_LOCK:
        _SECRETS.update(forms)
        # Longest first: a secret's escaped form can contain the plain one.
        _ORDERED = tuple(sorted(_SECRETS, key=len, reverse=True))


def forget_secrets() -> None:
    """Unregister every secret (tests)."""
    global _ORDERED
    with _SECRETS_LOCK:
        _SECRETS.clear()
        _ORDERED = ()


def _spellings(secret: str) -> set[str]:
    escaped = json.dumps(secret)[1:-1]
    return {
        secret,
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(escaped)[1:-1],  # escaped twice: a JSON message inside a JSON line
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
    }


def mask(text: str) -> str:
    for secret in _ORDERED:
        text = text.replace(secret, MASK)
    return text


def safe_uri(uri: str) -> str:
    """`uri` with its password (if any) masked, for messages: `http://me:***@host/`."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if password is None:
        return uri
    where = parts.netloc.rpartition("@")[2]  # host and port as written (IPv6 brackets too)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{where}"))


def uri_passwords(uri: str | None) -> list[str]:
    """The password inside `uri` as written and decoded (so the redactor learns both:
    `p!ss%40w0rd` is neither `p!ss@w0rd` nor its canonical encoding)."""
    if not uri:
        return []
    try:
        password = urlsplit(uri).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


class RedactingFormatter(logging.Formatter):
    """Masks registered secrets in the whole formatted line: message, extra fields and
    traceback alike (masking the message alone would miss `exc_info` and `extra`)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return mask(self.inner.format(record)) if _SECRETS else self.inner.format(record)


class _DropColorMessage(logging.Filter):
    """uvicorn attaches an ANSI-coloured copy of each message; JSON lines do not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def configure_logging(
    level: str = "INFO", *, json: bool = True, service: str | None = None
) -> None:
    """Route the root logger to stderr, as JSON lines (services) or text (CLI)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if json:
        static = {"service": service} if service else None
        formatter = JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields=static,
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(formatter))
    handler.addFilter(_DropColorMessage())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every (re)connection; keep its warnings.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
