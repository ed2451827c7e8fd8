"""What the ticket hears of a session: one comment per step, queued in the connectors' outbox.

Each comment is a row written in the transaction of the step it reports (nothing is sent
before it commits, and nothing committed is lost), with the stable marker of its (session,
step): the request once consent is asked for (with the device and its asset tag), the
decision (who, which rights, the digest of the consent receipt), the start, the end (who,
why, how long) with its summary, and on every end the evidence digest (queued now,
completed at delivery with the first signed checkpoint that covers the session's last event:
:mod:`broker.evidence.digest`) and how to export and verify the ticket's bundle;
later the end user's rating. Experts joining and files moving are written by the gateway
where they happen (``broker.gateway``). The session's moves reach this module as reactions
of :mod:`broker.flows.lifecycle`; the rating comes from :mod:`broker.flows.approval`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import texts
from broker.connectors.service import queue_step
from broker.context import settings_of
from broker.db.base import utcnow
from broker.evidence import digest
from broker.evidence.service import audit_log_of
from broker.sessions.repository import SessionRecord
from broker.sessions.states import TERMINAL, SessionState
from broker.sessions.transitions import Move

S = SessionState


def _technician(record: SessionRecord) -> str:
    return record.technician.display_name or record.technician.username


def _device(record: SessionRecord) -> str:
    d = record.device
    return texts.device_text(d.name, d.asset_tag, record.session.provider)


async def _step(
    db: AsyncSession, record: SessionRecord, event: str, step: str, text: str, data: Any
) -> None:
    await queue_step(
        db, record.ticket, event, session_id=record.session.id, step=step, text=text, data=data
    )


def _facts(record: SessionRecord, **more: Any) -> dict[str, Any]:
    """What webhook receivers get with each comment: ids and facts, never credentials."""
    s = record.session
    return {
        "session_id": s.id,
        "state": s.state,
        "technician": _technician(record),
        "device": record.device.name,
        "asset_tag": record.device.asset_tag,
        "provider": s.provider,
        **more,
    }


async def comment_on_ticket(db: AsyncSession, move: Move) -> None:
    """The ticket's comment for ``move``: asked, decided, started or ended."""
    if move.target is S.awaiting_consent:
        await _requested(db, move.record)
    elif move.target in (S.approved, S.denied):
        digest = move.data.get("receipt_digest")
        await _decision(
            db,
            move.record,
            move.target,
            decided_by=_decided_by(move),
            receipt_digest=str(digest) if digest else None,
        )
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
        asset_tag=record.device.asset_tag,
    )
    data = _facts(
        record,
        reason=s.reason,
        capabilities=list(s.capabilities),
        duration_minutes=s.duration_minutes,
        unattended=s.unattended,
    )
    await _step(db, record, "session.requested", "request", text, data)


async def _decision(
    db: AsyncSession,
    record: SessionRecord,
    target: SessionState,
    *,
    decided_by: str,
    receipt_digest: str | None,
) -> None:
    s = record.session
    approved = target is S.approved
    text = texts.decision_text(
        approved=approved,
        decided_by=decided_by,
        session_id=s.id,
        until=s.deadline_at if approved else None,
        note="unattended access by the device group's policy" if s.unattended else None,
        capabilities=s.capabilities,
        receipt_digest=receipt_digest,
    )
    facts = _facts(
        record,
        decision="approve" if approved else "deny",
        decided_by=decided_by,
        capabilities=list(s.capabilities),
        receipt_digest=receipt_digest,
        valid_until=s.deadline_at.isoformat() if approved and s.deadline_at else None,
    )
    await _step(db, record, "consent.decided", "consent", text, facts)


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
    await _step(db, record, "session.started", "start", text, facts)


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
        ended_by=s.ended_by,
        device=_device(record),
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
    await _step(db, record, "session.ended", "end", text, facts)


def _summary(record: SessionRecord, source: SessionState) -> str:
    s = record.session
    if s.active_at is not None:
        mode = "unattended (policy)" if s.unattended else "with the end user's consent"
        return f"connected {mode} to {record.device.name} through {s.provider}"
    if source is S.approved:
        return "approved but never connected"
    return "no connection was made"


async def seal_digest(db: AsyncSession, move: Move) -> None:
    """On an end: the evidence digest, queued now and completed at delivery with the first
    signed checkpoint that covers the session's last event (:mod:`broker.evidence.digest`);
    the provider's withdrawal follows the commit, later."""
    if move.target not in TERMINAL:
        return
    record = move.record
    log_ = audit_log_of(db)
    ticket = record.ticket
    ref = ticket.ref
    page = (
        f"{settings_of(db).base_url.rstrip('/')}/ui/audit/tickets/"
        f"{quote(ticket.system, safe='')}/{quote(ticket.external_id, safe='')}"
    )
    facts = {
        "session_id": record.session.id,
        "ticket": ref,
        "key_fingerprint": log_.signer.verifier.fingerprint,
        "export_command": texts.export_command(ref),
        "audit_page": page,
    }
    text = digest.placeholder_text(ref)
    queued = await queue_step(
        db, record.ticket, "evidence.sealed", session_id=record.session.id, step="evidence",
        text=text, data=facts,
    )  # fmt: skip
    if queued is not None:
        digest.cover_last_event(db, ref, queued)


async def rated(db: AsyncSession, record: SessionRecord) -> None:
    """The end user's rating and comment, after the session's end."""
    s = record.session
    if s.rating is None:
        return
    text = texts.rating_text(score=s.rating, comment=s.rating_comment, session_id=s.id)
    facts = _facts(record, score=s.rating, comment=s.rating_comment)
    await _step(db, record, "session.rated", "rating", text, facts)
