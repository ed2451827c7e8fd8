"""What the ticket hears of a session's moves: comments queued in the connectors' outbox.

Each comment is a row written in the move's own transaction (nothing is sent before the
move commits, and nothing committed is lost): the request once consent is asked for, the
decision, the start, the end with its summary, and on every end the evidence digest, the
signed checkpoint that covers the session's end and how to export the ticket's bundle.
Reactions of :mod:`broker.flows.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import texts
from broker.connectors.service import enqueue_ticket_comment
from broker.context import settings_of
from broker.db.base import utcnow
from broker.evidence.service import audit_log_of
from broker.sessions.repository import SessionRecord
from broker.sessions.states import TERMINAL, SessionState
from broker.sessions.transitions import Move

S = SessionState


def _technician(record: SessionRecord) -> str:
    return record.technician.display_name or record.technician.username


def _facts(record: SessionRecord, **more: Any) -> dict[str, Any]:
    """What webhook receivers get with each comment: ids and facts, never credentials."""
    s = record.session
    return {
        "session_id": s.id,
        "state": s.state,
        "technician": _technician(record),
        "device": record.device.name,
        "provider": s.provider,
        **more,
    }


async def comment_on_ticket(db: AsyncSession, move: Move) -> None:
    """The ticket's comment for ``move``: asked, decided, started or ended."""
    if move.target is S.awaiting_consent:
        await _requested(db, move.record)
    elif move.target in (S.approved, S.denied):
        await _decision(db, move.record, move.target, decided_by=_decided_by(move))
    elif move.target is S.active:
        await _started(db, move.record)
    elif move.target in TERMINAL:
        await _ended(db, move.record, move.source, move.target, data=move.data)


def _decided_by(move: Move) -> str:
    return str(move.data.get("decided_by") or move.actor.name or move.actor.kind)


async def _requested(db: AsyncSession, record: SessionRecord) -> None:
    s = record.session
    text = texts.request_text(
        technician=_technician(record),
        reason=s.reason,
        capabilities=s.capabilities,
        duration_minutes=s.duration_minutes,
        device=record.device.name,
        provider=s.provider,
        session_id=s.id,
        unattended=s.unattended,
    )
    data = _facts(
        record,
        reason=s.reason,
        capabilities=list(s.capabilities),
        duration_minutes=s.duration_minutes,
        unattended=s.unattended,
    )
    await enqueue_ticket_comment(db, record.ticket, "session.requested", text, data)


async def _decision(
    db: AsyncSession, record: SessionRecord, target: SessionState, *, decided_by: str
) -> None:
    s = record.session
    approved = target is S.approved
    text = texts.decision_text(
        approved=approved,
        decided_by=decided_by,
        session_id=s.id,
        until=s.deadline_at if approved else None,
        note="unattended access by the device group's policy" if s.unattended else None,
    )
    facts = _facts(
        record,
        decision="approve" if approved else "deny",
        decided_by=decided_by,
        valid_until=s.deadline_at.isoformat() if approved and s.deadline_at else None,
    )
    await enqueue_ticket_comment(db, record.ticket, "consent.decided", text, facts)


async def _started(db: AsyncSession, record: SessionRecord) -> None:
    s = record.session
    started = s.active_at or utcnow()
    text = texts.start_text(
        technician=_technician(record),
        device=record.device.name,
        provider=s.provider,
        started_at=started,
        session_id=s.id,
    )
    facts = _facts(record, started_at=started.isoformat())
    await enqueue_ticket_comment(db, record.ticket, "session.started", text, facts)


async def _ended(
    db: AsyncSession,
    record: SessionRecord,
    source: SessionState,
    target: SessionState,
    *,
    data: Mapping[str, Any],
) -> None:
    s = record.session
    ended = getattr(s, f"{target.value}_at", None) or utcnow()
    why = s.end_reason or data.get("why") or data.get("end_reason")
    text = texts.end_text(
        technician=_technician(record),
        session_id=s.id,
        started_at=s.active_at,
        ended_at=ended,
        outcome=target.value,
        reason=s.reason,
        capabilities=s.capabilities,
        end_reason=str(why) if why else None,
        summary=_summary(record, source),
    )
    facts = _facts(
        record,
        outcome=target.value,
        previous_state=source.value,
        started_at=s.active_at.isoformat() if s.active_at else None,
        ended_at=ended.isoformat(),
        duration_seconds=int((ended - s.active_at).total_seconds()) if s.active_at else None,
        end_reason=str(why) if why else None,
        ended_by=s.ended_by,
    )
    await enqueue_ticket_comment(db, record.ticket, "session.ended", text, facts)


def _summary(record: SessionRecord, source: SessionState) -> str:
    s = record.session
    if s.active_at is not None:
        mode = "unattended (policy)" if s.unattended else "with the end user's consent"
        return f"connected {mode} to {record.device.name} through {s.provider}"
    if source is S.approved:
        return "approved but never connected"
    return "no connection was made"


async def seal_digest(db: AsyncSession, move: Move) -> None:
    """On an end: the checkpoint signed with the session's last event, so the digest the
    ticket receives covers it (the provider's withdrawal follows the commit, later)."""
    if move.target not in TERMINAL:
        return
    record = move.record
    log_ = audit_log_of(db)
    latest = await log_.latest_checkpoint(await db.connection())
    if latest is None:  # cannot happen after the transition's own event; nothing to cite
        return
    ticket = record.ticket
    ref = ticket.ref
    page = (
        f"{settings_of(db).base_url.rstrip('/')}/ui/audit/tickets/"
        f"{quote(ticket.system, safe='')}/{quote(ticket.external_id, safe='')}"
    )
    text = texts.evidence_text(
        ticket_ref=ref,
        tree_size=latest.size,
        root_hash=latest.root.hex(),
        signed_at=utcnow(),
        key_fingerprint=log_.signer.verifier.fingerprint,
        audit_page=page,
    )
    facts = {
        "session_id": record.session.id,
        "ticket": ref,
        "tree_size": latest.size,
        "root_hash": latest.root.hex(),
        "key_fingerprint": log_.signer.verifier.fingerprint,
        "export_command": texts.export_command(ref),
        "audit_page": page,
    }
    await enqueue_ticket_comment(db, record.ticket, "evidence.sealed", text, facts)
