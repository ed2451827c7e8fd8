"""structlog, configured once: console output in development, JSON elsewhere.

The application log is not the audit log. Secrets never go in: a processor drops values whose
keys look secret, as a last line of defence behind not logging them in the first place, and
the database drivers' loggers are held at WARNING whatever the level, because at DEBUG they
print every statement's parameters (token hashes, consent lookups, one-time values).

Each log line carries the request id, and once known the user, the session and the ticket it
concerns: :func:`bind_ids` binds them for the rest of the request (or the ``with`` block of
:func:`bound_ids` in background work, where nothing clears them afterwards).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars

_SECRET_MARKERS = (
    "password",
    "secret",
    "token",
    "authorization",
    "cookie",
    "consent_code",
    "api_key",
    "private_key",
)


# Loggers that print SQL parameters or wire traffic at INFO/DEBUG.
QUIET_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.pool", "aiosqlite", "asyncpg")
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


# Secrets that travel in URLs, and so reach the access log and any logged path: the consent
# link token (it is the end user's credential), the gateway's one-time WebSocket ticket
# (``?ticket=`` + 43 URL-safe characters; a ticket *reference* such as HD-4711 is short and
# stays readable), and OAuth/OIDC callback parameters.
_SECRET_IN_URL = (
    (re.compile(r"(/consent/)[A-Za-z0-9_\-]{16,}"), r"\1[redacted]"),
    (re.compile(r"([?&]ticket=)[A-Za-z0-9_\-]{24,}"), r"\1[redacted]"),
    (
        re.compile(r"([?&](?:code|token|access_token|id_token|secret|password)=)[^&\s\"']+"),
        r"\1[redacted]",
    ),
)


def scrub(text: str) -> str:
    """``text`` with the secrets that URLs carry replaced by ``[redacted]``."""
    for pattern, replacement in _SECRET_IN_URL:
        text = pattern.sub(replacement, text)
    return text


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in list(event_dict.items()):
        lowered = name.lower()
        if name != "event" and any(m in lowered for m in _SECRET_MARKERS):
            event_dict[name] = "[redacted]"
        elif isinstance(value, str):
            # Paths and messages (uvicorn's access line is one) may hold a link token.
            event_dict[name] = scrub(value)
    return event_dict


def configure_logging(fmt: str = "console", level: int = logging.INFO) -> None:
    """Configure structlog and the stdlib root logger (uvicorn, sqlalchemy) the same way."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # uvicorn's default logging config (applied by anything that started a server in this
    # process before us) gives its loggers their own handler and stops them propagating:
    # their lines would bypass the renderer and the redaction above.
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers[:] = []
        server_logger.propagate = True
        server_logger.disabled = False


def _ids(session_id: str | None, ticket: str | None) -> dict[str, str]:
    return {k: v for k, v in (("session_id", session_id), ("ticket", ticket)) if v is not None}


def bind_ids(*, session_id: str | None = None, ticket: str | None = None) -> None:
    """Bind the session and ticket a request is about to every later log line of it."""
    bind_contextvars(**_ids(session_id, ticket))


@contextmanager
def bound_ids(*, session_id: str | None = None, ticket: str | None = None) -> Iterator[None]:
    """Like :func:`bind_ids` for one step of background work; unbound again on exit."""
    with bound_contextvars(**_ids(session_id, ticket)):
        yield


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
