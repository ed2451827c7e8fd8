"""What a session's moves cause outside the sessions table: ticket comments and provider access.

:func:`after_transition` runs inside :func:`broker.sessions.transitions.transition`, right
after the state's audit event, so every move (by a person, the deadline sweep, a webhook or
the gateway) tells the ticket and withdraws provider access in the same transaction:

- the ticket receives a comment through the connectors' outbox (a row in this transaction:
  nothing is sent before the change commits, and nothing committed is lost);
- leaving ``approved``/``active`` for a terminal state calls the provider's ``on_ended``
  (which never raises: an outage is recorded and retried by the sweeper);
- a terminal state also queues the evidence digest: the signed checkpoint that already
  covers the session's last event, and how to export the ticket's bundle.

:func:`provide_access` runs on approval (``broker.sessions.service.approve``);
:func:`reconcile_due` is the background job that seals what providers recorded, while a
session runs and once after its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.connectors import texts
from broker.connectors.service import enqueue_ticket_comment
from broker.context import settings_of
from broker.db.base import utcnow
from broker.errors import BrokerError, ProviderError
from broker.evidence.service import Actor, audit_log_of
from broker.providers import service as providers
from broker.sessions.models import RemoteSession
from broker.sessions.repository import SessionRecord
from broker.sessions.states import TERMINAL, SessionState

S = SessionState
log = structlog.get_logger("broker.sessions")
# Leaving these for a terminal state withdraws what the provider granted on approval.
GRANTED = frozenset({S.approved, S.active})


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


async def comment_requested(db: AsyncSession, record: SessionRecord) -> None:
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


async def after_transition(
    db: AsyncSession,
    record: SessionRecord,
    source: SessionState,
    target: SessionState,
    *,
    actor: Actor,
    data: Mapping[str, Any],
) -> None:
    """Tell the ticket about the move and end provider access when the session is over."""
    if target in TERMINAL and source in GRANTED:
        await providers.on_ended(db, record.session)
    if target in (S.approved, S.denied):
        await _decision(db, record, target, actor=actor, data=data)
    elif target is S.active:
        await _started(db, record)
    elif target in TERMINAL:
        await _ended(db, record, source, target, data=data)
    if target in TERMINAL:
        await _evidence(db, record)


async def _decision(
    db: AsyncSession,
    record: SessionRecord,
    target: SessionState,
    *,
    actor: Actor,
    data: Mapping[str, Any],
) -> None:
    s = record.session
    approved = target is S.approved
    decided_by = str(data.get("decided_by") or actor.name or actor.kind)
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


async def _evidence(db: AsyncSession, record: SessionRecord) -> None:
    """The checkpoint signed with the session's last event, so the digest covers it."""
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


async def provide_access(db: AsyncSession, record: SessionRecord) -> str | None:
    """Ask the provider for the approved access; returns why it could not (None when done).

    ``on_approved`` records ``provider.prepare_failed`` itself; the caller moves the session
    to ``failed`` with the returned reason, so the failure is the session's audited end.
    """
    try:
        await providers.on_approved(db, record.session)
    except ProviderError as exc:  # recorded by on_approved; the session's end records why
        log.warning("sessions.provider_failed", session_id=record.session.id, error=exc.code)
        return f"provider {record.session.provider} could not open the session: {exc.detail}"
    return None


# While a session runs, what the provider recorded is read at most this often...
RECONCILE_EVERY = timedelta(minutes=1)
# ...and once more this long after the end, when the provider has written its log.
RECONCILE_SETTLE = timedelta(minutes=1)


async def reconcile_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    every: timedelta = RECONCILE_EVERY,
    settle: timedelta = RECONCILE_SETTLE,
    now: datetime | None = None,
) -> int:
    """Seal what providers recorded about running and just-ended sessions (the background
    loop runs this). One transaction per session: a provider that is down rolls back only
    its own session's work, which the next run does again. Returns audit events recorded."""
    now = now or utcnow()
    async with sessionmaker() as db:
        due = await providers.due_for_reconcile(db, now=now, every=every, settle=settle)
    recorded = 0
    for session_id in due:
        try:
            async with sessionmaker() as db, db.begin():
                session = await db.get(RemoteSession, session_id)
                if session is not None:
                    recorded += await providers.reconcile(db, session)
        except BrokerError as exc:  # an outage: logged, retried on the next run
            log.warning(
                "sessions.reconcile_failed",
                session_id=session_id,
                error=exc.code,
                detail=exc.detail,
            )
    return recorded
