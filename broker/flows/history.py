"""The end user's history of their device, and the device owner's notice of unattended work.

A consent page links to the history of the device its request was for
(:func:`broker.consent.service.history_link`). The link is the credential, like the consent
link: a 256-bit HMAC of the request id under the server key, stored nowhere, compared in
constant time (unguessable, so no throttle is needed; see docs/SECURITY.md). It works for
``consent_link_retention_days`` after the request was opened, then answers 410. What it
shows is that one device's sessions and nothing else: who, when, why, which rights, how
long, how it ended, each with its consent receipt as sealed in the audit log to download
(the receipt, its SHA-256, its log position and the inclusion proof in the latest signed
checkpoint, so the end user can have it checked against the published log). Each opening is
sealed as ``history.viewed`` in the consent's ticket.

After an unattended session that ran (approved or active, then an end) the device's
``owner_contact`` is owed a mail with the same facts (:func:`notify_owner`, a reaction of
the session lifecycle, queued in the ending transaction; broker.notices delivers it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.consent import service as consent
from broker.consent.models import ConsentRequest
from broker.context import settings_of
from broker.devices.models import Device
from broker.errors import NotFound
from broker.evidence import proofs
from broker.evidence.events import EventType
from broker.evidence.service import SealedEvent, record_event, sealed_events
from broker.notices import service as notices
from broker.notices.mailer import Mail
from broker.providers.offers import END_USER_WORDS
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord
from broker.sessions.states import TERMINAL, SessionState
from broker.sessions.transitions import Move

S = SessionState
HISTORY_LIMIT = 500
RECEIPTS = (EventType.consent_decided, EventType.consent_receipt)
# Leaving these for an end means the session was allowed to run: the owner is told.
RAN = frozenset({S.approved, S.active})
RECEIPT_KIND = "supportbroker.consent-receipt/v1"
NO_SUCH_SESSION = "this history has no such session"


@dataclass(frozen=True)
class Entry:
    record: SessionRecord
    receipt: SealedEvent | None  # the consent receipt as sealed (None: never decided)

    @property
    def facts(self) -> dict[str, Any]:
        return facts(self.record)


@dataclass(frozen=True)
class History:
    request: ConsentRequest
    device: Device
    entries: list[Entry]
    expires_at: datetime


def ended_at(record: SessionRecord) -> datetime | None:
    s = record.session
    return s.ended_at or s.revoked_at or s.failed_at or s.denied_at or s.expired_at


def facts(record: SessionRecord) -> dict[str, Any]:
    """What the end user and the device owner are told of one session."""
    s = record.session
    end = ended_at(record)
    minutes = None
    if s.active_at is not None and end is not None:
        minutes = max(0, round((end - s.active_at).total_seconds() / 60))
    return {
        "session_id": s.id,
        "technician": record.technician.display_name,
        "ticket": record.ticket.ref,
        "ticket_subject": record.ticket.subject,
        "device": record.device.name,
        "reason": s.reason,
        "capabilities": list(s.capabilities),
        "requested_at": s.requested_at,
        "started_at": s.active_at,
        "ended_at": end,
        "allowed_minutes": s.duration_minutes,
        "ran_minutes": minutes,
        "state": s.state,
        "unattended": s.unattended,
        "ended_by": s.ended_by,
        "end_reason": s.end_reason,
    }


async def _opened(db: AsyncSession, token: str) -> tuple[ConsentRequest, SessionRecord]:
    request = await consent.by_history_token(db, token)
    record, _ = await sessions.load(db, request.session_id)
    return request, record


async def _receipts(db: AsyncSession, records: Sequence[SessionRecord]) -> dict[str, SealedEvent]:
    """Each session's latest consent receipt, read from its ticket's sealed events."""
    found: dict[str, SealedEvent] = {}
    for ref in dict.fromkeys(r.ticket.ref for r in records):
        for event in await sealed_events(db, ref, *RECEIPTS):
            found[str(event.data.get("session_id"))] = event  # oldest first: the last wins
    return found


async def view(db: AsyncSession, token: str, *, ip: str) -> History:
    """Every session on the device the history link's request was for (and no other)."""
    request, opened = await _opened(db, token)
    device = opened.device
    records = await sessions.device_sessions(db, device.id, limit=HISTORY_LIMIT)
    receipts = await _receipts(db, records)
    await record_event(
        db,
        EventType.history_viewed,
        ticket=opened.ticket.ref,
        actor=consent.end_user(request.decided_by, ip),
        data={"consent_request_id": request.id, "device_id": device.id, "sessions": len(records)},
    )
    entries = [Entry(r, receipts.get(r.session.id)) for r in records]
    return History(request, device, entries, consent.history_expires_at(db, request))


async def receipt(db: AsyncSession, token: str, session_id: str, *, ip: str) -> dict[str, Any]:
    """The consent receipt of one session on the link's device, as a document to keep."""
    request, opened = await _opened(db, token)
    # Another device's session is answered exactly like one that does not exist.
    try:
        record, _ = await sessions.load(db, session_id)
    except NotFound:
        raise NotFound(NO_SUCH_SESSION) from None
    if record.device.id != opened.device.id:
        raise NotFound(NO_SUCH_SESSION)
    sealed = (await _receipts(db, [record])).get(record.session.id)
    if sealed is None:
        raise NotFound("nobody decided on this session's request: there is no receipt")
    proof = await proofs.record_proof(db, sealed.position)
    if sealed.event_type == EventType.consent_receipt.value:
        body = dict(sealed.data.get("receipt") or {})
        extra = {
            "signature": sealed.data.get("signature"),
            "device_fingerprint": sealed.data.get("device_fingerprint"),
        }
    else:
        body, extra = dict(sealed.data), {}
    await record_event(
        db,
        EventType.history_viewed,
        ticket=opened.ticket.ref,
        actor=consent.end_user(request.decided_by, ip),
        data={
            "consent_request_id": request.id,
            "device_id": opened.device.id,
            "receipt_of": record.session.id,
        },
    )
    return {
        "kind": RECEIPT_KIND,
        "event": sealed.event_type,
        "sealed_at": sealed.occurred_at.isoformat(),
        "receipt": body,
        # RFC 8785 canonical JSON, hashed: the digest the ticket's comment names.
        "receipt_sha256": consent.signed_receipt_digest(body),
        **extra,
        "log": {
            "origin": settings_of(db).audit_log_id,
            "position": sealed.position,
            "record_id": sealed.record_id,
            "leaf_hash": proof.leaf_hash.hex(),
            "checkpoint": proof.checkpoint.note if proof.checkpoint else None,
            "inclusion_path": [p.hex() for p in proof.path],
        },
    }


def notice_mail(record: SessionRecord, recipient: str) -> Mail:
    """The device owner's mail about one unattended session: the history page's facts."""
    f = facts(record)
    rights = "; ".join(END_USER_WORDS.get(c, c) for c in sorted(f["capabilities"])) or "none"
    lines = [
        f"An unattended remote support session on your computer {f['device']} has ended.",
        "",
        f"Technician:   {f['technician']}",
        f"Ticket:       {f['ticket']}"
        + (f" ({f['ticket_subject']})" if f["ticket_subject"] else ""),
        f"Reason:       {f['reason']}",
        f"Rights:       {rights}",
        f"Requested at: {_utc(f['requested_at'])}",
        f"Started at:   {_utc(f['started_at']) or 'never connected'}",
        f"Ended at:     {_utc(f['ended_at'])}",
        f"Duration:     {_minutes(f['ran_minutes'])} (allowed: {f['allowed_minutes']} minutes)",
        f"Final state:  {f['state']}" + (f" ({f['end_reason']})" if f["end_reason"] else ""),
        "",
        "Your organisation's policy allows this computer to be reached without asking you;",
        "every such session is recorded in a tamper-evident audit log. Ask your support team",
        f"about ticket {f['ticket']} if you did not expect it.",
    ]
    subject = f"Remote support on {f['device']}: unattended session ended ({f['ticket']})"
    return Mail(recipient=recipient, subject=subject, body="\n".join(lines) + "\n")


def _utc(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else ""


def _minutes(value: int | None) -> str:
    return "did not run" if value is None else f"{value} minute(s)"


async def notify_owner(db: AsyncSession, move: Move) -> None:
    """Owe the device owner a mail when an unattended session that ran has ended."""
    record = move.record
    contact = (record.device.owner_contact or "").strip()
    if not (record.session.unattended and move.target in TERMINAL and move.source in RAN):
        return
    if "@" not in contact:  # a phone number or a name: nothing to mail
        return
    await notices.enqueue(
        db,
        session_id=record.session.id,
        ticket_ref=record.ticket.ref,
        mail=notice_mail(record, contact),
    )
