"""HMAC-SHA256 signatures with a timestamp, for webhooks in both directions.

The signed string is ``f"{timestamp}.{body}"`` so a signature cannot be moved to another
moment; the receiver refuses timestamps outside its replay window and delivery ids it has
already seen (the broker keeps those in ``connector_webhook_deliveries``). Headers:

- ``X-SupportBroker-Timestamp``: Unix seconds
- ``X-SupportBroker-Delivery``: a unique id per delivery (retries keep the id)
- ``X-SupportBroker-Event``: the event type
- ``X-SupportBroker-Signature``: ``v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>``
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from broker.errors import NotAuthenticated

TIMESTAMP_HEADER = "X-SupportBroker-Timestamp"
DELIVERY_HEADER = "X-SupportBroker-Delivery"
EVENT_HEADER = "X-SupportBroker-Event"
SIGNATURE_HEADER = "X-SupportBroker-Signature"
SCHEME = "v1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(
    secret: str, body: bytes, *, delivery_id: str, event_type: str, now: datetime | None = None
) -> dict[str, str]:
    timestamp = int((now or datetime.now(UTC)).timestamp())
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event_type,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    window_seconds: int,
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """Check signature and timestamp; returns ``(delivery_id, signed_at)``."""
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ts = lower.get(TIMESTAMP_HEADER.lower(), "")
    sent = lower.get(SIGNATURE_HEADER.lower(), "")
    delivery_id = lower.get(DELIVERY_HEADER.lower(), "").strip()
    if not raw_ts or not sent or not delivery_id:
        raise NotAuthenticated(
            f"webhook needs {TIMESTAMP_HEADER}, {DELIVERY_HEADER} and {SIGNATURE_HEADER}"
        )
    if not raw_ts.isdigit() or len(delivery_id) > 200:
        raise NotAuthenticated("webhook timestamp or delivery id malformed")
    timestamp = int(raw_ts)
    # Compare the signature before looking at the time: an attacker learns nothing from
    # which check failed first.
    if not hmac.compare_digest(sent.strip(), signature(secret, timestamp, body)):
        raise NotAuthenticated("webhook signature does not match")
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - timestamp) > window_seconds:
        raise NotAuthenticated(f"webhook timestamp is outside the {window_seconds}s replay window")
    return delivery_id, datetime.fromtimestamp(timestamp, UTC)
