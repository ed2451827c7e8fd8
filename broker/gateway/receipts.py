"""Consent receipts signed by a device key: the request the agent saw and how it is verified.

The agent signs the canonical JSON (sorted keys, no spaces, UTF-8) of its receipt with its
Ed25519 device key, in SSH signature format. The receipt names the SHA-256 of the exact
consent request we sent, which we rebuild from the database (so any replica can verify).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

import asyncssh

from broker.errors import ValidationFailed
from broker.sessions.repository import SessionRecord


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def consent_request(record: SessionRecord) -> dict[str, Any]:
    """What the device shows; deterministic from the session so the digest can be rebuilt."""
    s = record.session
    return {
        "type": "consent_request",
        "session_id": s.id,
        "technician": record.technician.display_name,
        "ticket": record.ticket.ref,
        "subject": record.ticket.subject,
        "reason": s.reason,
        "capabilities": list(s.capabilities),
        "duration_minutes": s.duration_minutes,
        "expires_at": s.deadline_at.isoformat() if s.deadline_at else None,
    }


def verify(
    record: SessionRecord, public_key: str, key_fingerprint: str, receipt: dict[str, Any], sig: str
) -> None:
    """Raise ValidationFailed unless ``receipt`` is this device's answer to this request."""
    try:
        key = asyncssh.import_public_key(public_key)
        ok = key.verify(canonical(receipt), base64.b64decode(sig, validate=True))
    except (asyncssh.KeyImportError, binascii.Error, ValueError) as exc:
        raise ValidationFailed(f"consent receipt signature unreadable: {exc}") from exc
    if not ok:
        raise ValidationFailed("consent receipt signature does not verify")
    expected = hashlib.sha256(canonical(consent_request(record))).hexdigest()
    problems = []
    if receipt.get("session_id") != record.session.id:
        problems.append("session")
    if receipt.get("device_fingerprint") != key_fingerprint:
        problems.append("device")
    if receipt.get("request_digest") != expected:
        problems.append("request digest (the device saw a different request)")
    if receipt.get("decision") not in {"approve", "deny"}:
        problems.append("decision")
    if problems:
        raise ValidationFailed(f"consent receipt does not match: {', '.join(problems)}")
