"""What the help desks' own inbound formats share: headers, HMAC checks, JSON, freshness.

Each desk signs (or authenticates) its notifications its own way; the per-desk modules
(``zammad/inbound.py``, ``jira/inbound.py``, ``glpi/inbound.py``, ``freshdesk/inbound.py``)
use these helpers so every check fails the same way: ``NotAuthenticated`` (HTTP 401, the
refusal audited) when the sender cannot be trusted or the delivery is stale,
``ValidationFailed`` (HTTP 422) when a trusted sender sent something we cannot read. Both
are kept for the admin by :mod:`broker.connectors.service`; neither changes anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from broker.errors import NotAuthenticated, ValidationFailed

# Headers whose values are credentials or signatures: never kept, never logged.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-glpi-signature",
        "x-supportbroker-signature",
        "x-api-key",
    }
)
MAX_KEPT_HEADER = 300


def header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value.strip()
    return ""


def redacted(headers: Mapping[str, str], extra_secret: str | None = None) -> dict[str, str]:
    """Headers as kept for the admin: credentials and signatures replaced, values cut."""
    secret = {extra_secret.lower()} if extra_secret else set()
    kept: dict[str, str] = {}
    for key, value in headers.items():
        lower = key.lower()
        hidden = lower in SECRET_HEADERS or lower in secret
        kept[lower] = "[redacted]" if hidden else value[:MAX_KEPT_HEADER]
    return kept


def require_secret(secret: Any, system: str) -> str:
    """The configured webhook secret, or a refusal: no secret, no webhooks."""
    if secret is None:
        raise NotAuthenticated(f"webhooks are not enabled for {system!r} (no webhook_secret)")
    value: str = secret.get_secret_value()
    return value


def check_hmac(
    secret: str, message: bytes, sent: str, *, digest: str, prefix: str = "", what: str
) -> str:
    """Compare ``sent`` (``prefix`` + hex) with the HMAC of ``message``; returns the hex."""
    expected = hmac.new(secret.encode(), message, digest).hexdigest()
    value = sent.strip()
    if prefix:
        if not value.lower().startswith(prefix):
            raise NotAuthenticated(f"{what} must start with {prefix!r}")
        value = value[len(prefix) :]
    if not hmac.compare_digest(value.lower(), expected):
        raise NotAuthenticated(f"{what} does not match the body (wrong secret, or altered)")
    return expected


def check_basic(headers: Mapping[str, str], user: str, secret: str) -> bool:
    """True when ``Authorization: Basic`` carries ``user`` and ``secret``."""
    raw = header(headers, "authorization")
    if not raw.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(raw[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    name, _, password = decoded.partition(":")
    return hmac.compare_digest(name.encode(), user.encode()) & hmac.compare_digest(
        password.encode(), secret.encode()
    )


def check_fresh(moment: datetime, now: datetime, window_seconds: int, what: str) -> None:
    if abs((now - moment).total_seconds()) > window_seconds:
        raise NotAuthenticated(f"{what} is outside the {window_seconds}s replay window")


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"{what}: the body is not JSON") from exc
    if not isinstance(payload, dict):
        raise ValidationFailed(f"{what}: the body must be a JSON object")
    return payload


def obj(payload: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise ValidationFailed(f"{what}: '{key}' must be an object")
    return value


def ticket_id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise ValidationFailed(f"{what}: the ticket id is missing")
    text = str(value).strip()
    if len(text) > 100:
        raise ValidationFailed(f"{what}: the ticket id is longer than 100 characters")
    return text


def person(value: Any) -> str | None:
    """A person as a desk names them (object or string), the login or e-mail first."""
    if isinstance(value, Mapping):
        for key in ("login", "emailAddress", "email", "name", "displayName", "display_name"):
            found = value.get(key)
            if isinstance(found, str) and found.strip():
                return found.strip()[:200]
        first, last = value.get("firstname"), value.get("lastname")
        joined = " ".join(p for p in (first, last) if isinstance(p, str) and p)
        return joined[:200] or None
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()[:200]
    return None


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def iso_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def window(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)
