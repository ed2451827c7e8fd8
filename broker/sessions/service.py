"""Remote sessions: request (gated by :mod:`broker.sessions.gate`), approve, start, end,
revoke, cancel, fail, end a ticket's sessions, read and list, and the deadline sweep.

Every state change goes through :func:`broker.sessions.transitions.transition`, which
publishes the move to the session lifecycle (``broker.flows.lifecycle``: the ticket's
comment, the provider's access). This domain knows nothing of consent: the request → consent
→ approval sequence is ``broker.flows.approval``. Deadlines are applied on read as well as
by the background sweep, so a stale state is never returned or acted on. Policy refusals are
audited (``policy.denied``) and committed although the request fails, so an auditor sees
attempts as well as sessions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.auth.service import get_user
from broker.connectors import service as connectors
from broker.context import settings_of
from broker.db.base import new_id, utcnow
from broker.devices import service as devices
from broker.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    PermissionDenied,
)
from broker.evidence.events import EventType
from broker.evidence.service import ERASED_TEXT, Actor, record_event
from broker.logging import bind_ids, bound_ids
from broker.sessions import gate, oversight
from broker.sessions.models import RemoteSession
from broker.sessions.repository import SessionFilter, SessionRecord, SessionRepository
from broker.sessions.schemas import SessionCreate
from broker.sessions.states import SessionState
from broker.sessions.transitions import settle, transition
from broker.tickets.models import Ticket
from broker.tickets.service import ensure_ticket

S = SessionState
CANCELLABLE = frozenset({S.awaiting_approval, S.awaiting_consent, S.approved})


async def request_session(
    db: AsyncSession, principal: Principal, req: SessionCreate, *, offered: gate.Offered
) -> SessionRecord:
    """Request a session: the gate's checks (``offered``: what each provider can give), the
    concurrency limit, then ``requested → awaiting_consent`` with the consent deadline in
    ``deadline_at`` (or ``awaiting_approval`` first, where the device group's policy asks a
    second person: ``broker.sessions.oversight``). Only technicians may."""
    if principal.role != "technician" or principal.user_id is None:
        raise PermissionDenied("only technicians request remote sessions")
    settings = settings_of(db)
    ref = f"{req.ticket.system}:{req.ticket.external_id}"
    admitted = await gate.check_request(db, principal, req, ref, offered=offered)
    device, provider, info = admitted.device, admitted.provider, admitted.ticket
    repo = SessionRepository(db)
    # Lock before counting so two racing requests cannot both see room for one more.
    await repo.lock_technician(principal.user_id)
    technician = await get_user(db, principal.user_id)
    limit = technician.max_concurrent_sessions or settings.max_concurrent_sessions
    open_now = await repo.count_open(principal.user_id)
    if open_now >= limit:
        await gate.deny(
            db,
            principal,
            ref,
            "concurrency_limit",
            f"you already have {open_now} open session(s); the limit is {limit}",
        )
    ticket = await ensure_ticket(
        db,
        system=req.ticket.system,
        external_id=req.ticket.external_id,
        actor=principal.actor(),
        subject=info.subject or req.ticket.subject,
        requester=info.requester or req.ticket.requester,
        source=info.source,
    )
    if info.verified:
        connectors.sync_ticket(ticket, info)
    # The request's priority and category (a group's approval policy may be narrowed by them).
    if req.ticket.priority is not None:
        ticket.priority = req.ticket.priority
    if req.ticket.category is not None:
        ticket.category = req.ticket.category

    now = utcnow()
    # Not flushed here: the move to awaiting_consent below is then set on the pending row
    # and one INSERT writes both (broker.sessions.transitions), one statement fewer.
    session = RemoteSession(
        id=new_id(),
        ticket_id=ticket.id,
        technician_id=technician.id,
        device_id=device.id,
        provider=provider,
        reason=admitted.reason,
        capabilities=sorted({c.value for c in req.capabilities}),
        duration_minutes=req.duration_minutes,
        unattended=req.unattended,
        state=S.requested.value,
        version=1,
        requested_at=now,
        answers={},
    )
    db.add(session)
    record = SessionRecord(session, ticket, technician, device)
    bind_ids(session_id=session.id, ticket=ticket.ref)
    await record_event(
        db,
        EventType.session_requested,
        ticket=ticket.ref,
        actor=principal.actor(),
        data={
            "session_id": session.id,
            "device_id": device.id,
            "device": device.name,
            "provider": provider,
            "reason": admitted.reason,
            "capabilities": session.capabilities,
            "duration_minutes": session.duration_minutes,
            "unattended": req.unattended,
        },
    )
    timeout = admitted.group.consent_timeout_seconds or settings.consent_timeout_seconds
    expires_at = now + timedelta(seconds=timeout)
    if oversight.approval_needed(admitted.group, ticket):
        # A second person first; the same timeout, then it expires like consent.
        await transition(
            db,
            record,
            S.awaiting_approval,
            actor=principal.actor(),
            data={"approval_expires_at": expires_at.isoformat()},
            values={"deadline_at": expires_at},
            now=now,
        )
        return record
    await transition(
        db,
        record,
        S.awaiting_consent,
        actor=principal.actor(),
        data={"consent_expires_at": expires_at.isoformat()},
        values={"deadline_at": expires_at},
        now=now,
    )
    return record


async def approve(
    db: AsyncSession,
    record: SessionRecord,
    *,
    actor: Actor,
    data: Mapping[str, Any],
    until: datetime,
    now: datetime,
    answers: dict[str, str] | None = None,
) -> None:
    """awaiting_consent → approved: the approved time runs from ``now`` to ``until`` (the
    provider's access follows the commit: ``broker.flows.lifecycle``)."""
    values: dict[str, Any] = {"deadline_at": until}
    if answers:
        values["answers"] = answers
    await transition(
        db,
        record,
        S.approved,
        actor=actor,
        data={**data, "unattended": record.session.unattended, "until": until.isoformat()},
        values=values,
        now=now,
    )


async def deny(
    db: AsyncSession,
    record: SessionRecord,
    *,
    actor: Actor,
    name: str,
    data: Mapping[str, Any] | None = None,
) -> None:
    await transition(
        db,
        record,
        S.denied,
        actor=actor,
        data={"decided_by": name, **(data or {})},
        values={"end_reason": "denied by the end user", "ended_by": name, "deadline_at": None},
    )


async def load(db: AsyncSession, session_id: str) -> tuple[SessionRecord, bool]:
    """The session with its deadline applied; the flag says whether that moved it."""
    record = await SessionRepository(db).record(session_id)
    if record is None:
        raise NotFound(f"no session {session_id}")
    return record, await settle(db, record)


def _own(principal: Principal, record: SessionRecord) -> bool:
    return principal.user_id is not None and record.session.technician_id == principal.user_id


async def get_session(db: AsyncSession, principal: Principal, session_id: str) -> SessionRecord:
    record = await SessionRepository(db).record(session_id)
    if record is None:
        raise NotFound(f"no session {session_id}")
    bind_ids(session_id=session_id, ticket=record.ticket.ref)
    if principal.role == "technician" and not _own(principal, record):
        raise PermissionDenied(f"session {session_id} belongs to another technician")
    if principal.role == "supervisor" and not await oversight.supervises(db, principal, record):
        raise PermissionDenied(f"session {session_id} is not in one of your device groups")
    await settle(db, record)
    return record


async def list_sessions(
    db: AsyncSession, principal: Principal, filters: SessionFilter, *, limit: int, offset: int
) -> list[SessionRecord]:
    """Sessions matching ``filters``, newest first; technicians see only their own,
    supervisors those of their device groups. Filtering by audit event type reads the log's
    headers: it needs ``audit:read`` (auditors, admins)."""
    if filters.event_type is not None and not principal.has(Scope.audit_read):
        raise PermissionDenied("searching by audit event type needs the audit:read scope")
    if principal.role == "technician":
        filters = dataclasses.replace(filters, technician_id=principal.user_id or "")
    elif principal.role == "supervisor":
        filters = dataclasses.replace(filters, member_id=principal.user_id or "")
    repo = SessionRepository(db)
    # Apply run-out deadlines first so a state filter sees the states as they really are.
    for session_id in await repo.due(utcnow(), dataclasses.replace(filters, state=None)):
        await load(db, session_id)
    return await repo.records(filters, limit=limit, offset=offset)


async def _acting(
    db: AsyncSession, principal: Principal, session_id: str, *, admin_may: bool
) -> tuple[SessionRecord, bool]:
    record, moved = await load(db, session_id)
    bind_ids(session_id=session_id, ticket=record.ticket.ref)
    if _own(principal, record) and principal.has(Scope.sessions_write):
        return record, moved
    if admin_may and principal.has(Scope.sessions_admin):
        return record, moved
    if admin_may and await oversight.supervises(db, principal, record):
        return record, moved
    raise PermissionDenied(f"session {session_id} is not yours", keep_changes=moved)


def _supervising(principal: Principal, record: SessionRecord) -> bool:
    """Acting on the session as its group's supervisor (not as its technician or an admin)."""
    return (
        principal.has(Scope.sessions_supervise)
        and not _own(principal, record)
        and not principal.has(Scope.sessions_admin)
    )


async def start_session(db: AsyncSession, principal: Principal, session_id: str) -> SessionRecord:
    """approved → active: the technician (or their provider) connects."""
    record, moved = await _acting(db, principal, session_id, admin_may=False)
    await transition(db, record, S.active, actor=principal.actor(), keep_changes=moved)
    return record


async def end_session(
    db: AsyncSession, principal: Principal, session_id: str, note: str | None = None
) -> SessionRecord:
    """active → ended, by the technician who owns it, an admin, or a supervisor of its group
    (who must give the reason)."""
    record, moved = await _acting(db, principal, session_id, admin_may=True)
    if _supervising(principal, record):
        note = oversight.reason_needed(note, "ends")
    why = note or f"ended by {principal.role}"
    await transition(
        db,
        record,
        S.ended,
        actor=principal.actor(),
        data={"end_reason": why},
        values={"end_reason": why, "ended_by": principal.name, "deadline_at": None},
        keep_changes=moved,
    )
    return record


async def revoke_session(
    db: AsyncSession, principal: Principal, session_id: str, note: str | None = None
) -> SessionRecord:
    """An admin, or a supervisor of its group with a reason, withdraws the session (awaiting
    consent, approved or active) → revoked."""
    record, moved = await load(db, session_id)
    bind_ids(session_id=session_id, ticket=record.ticket.ref)
    if principal.has(Scope.sessions_admin):
        by = "an admin"
    elif await oversight.supervises(db, principal, record):
        by, note = "a supervisor", oversight.reason_needed(note, "revokes")
    else:
        raise PermissionDenied(
            "revoking needs the sessions:admin scope, or supervising the device's group",
            keep_changes=moved,
        )
    why = f"revoked by {by}: {note}" if note else f"revoked by {by}"
    await _revoke(db, record, actor=principal.actor(), name=principal.name, why=why, keep=moved)
    return record


async def cancel_session(
    db: AsyncSession, principal: Principal, session_id: str, note: str | None = None
) -> SessionRecord:
    """The technician withdraws a request that has not started (→ revoked)."""
    record, moved = await _acting(db, principal, session_id, admin_may=False)
    state = S(record.session.state)
    if state not in CANCELLABLE:
        raise IllegalTransition(
            f"session {session_id} is {state}; only a session not yet started can be "
            "cancelled (end an active one instead)",
            keep_changes=moved,
        )
    why = f"cancelled by the technician: {note}" if note else "cancelled by the technician"
    await _revoke(db, record, actor=principal.actor(), name=principal.name, why=why, keep=moved)
    return record


async def revoke_by_end_user(
    db: AsyncSession, record: SessionRecord, *, actor: Actor, name: str, keep: bool
) -> None:
    """The end user takes consent back: approved or active → revoked."""
    state = S(record.session.state)
    if state in (S.requested, S.awaiting_approval, S.awaiting_consent):
        raise IllegalTransition(
            f"session {record.session.id} is {state}: nothing was approved yet; deny it instead",
            keep_changes=keep,
        )
    await _revoke(db, record, actor=actor, name=name, why="revoked by the end user", keep=keep)


async def _revoke(
    db: AsyncSession, record: SessionRecord, *, actor: Actor, name: str, why: str, keep: bool
) -> None:
    await transition(
        db,
        record,
        S.revoked,
        actor=actor,
        data={"end_reason": why},
        values={"end_reason": why, "ended_by": name, "deadline_at": None},
        keep_changes=keep,
    )


async def consent_deadline(db: AsyncSession, record: SessionRecord) -> datetime:
    """When the end user's consent, asked from now, expires: the group's timeout or the
    broker's default."""
    group = await devices.get_group(db, record.device.group_id)
    timeout = group.consent_timeout_seconds or settings_of(db).consent_timeout_seconds
    return utcnow() + timedelta(seconds=timeout)


async def fail_session(db: AsyncSession, record: SessionRecord, *, actor: Actor, why: str) -> None:
    """Any open state → failed (a provider could not connect, consent was locked...)."""
    await transition(
        db,
        record,
        S.failed,
        actor=actor,
        data={"end_reason": why},
        values={"end_reason": why, "ended_by": actor.name, "deadline_at": None},
    )


async def fail_if_running(db: AsyncSession, session_id: str, *, actor: Actor, why: str) -> bool:
    """approved or active → failed (the provider could not grant what was approved, the
    device's agent vanished); False when the session had already ended."""
    record, _ = await load(db, session_id)
    if S(record.session.state) not in (S.approved, S.active):
        return False
    await fail_session(db, record, actor=actor, why=why)
    return True


async def serve_from(
    db: AsyncSession, session_id: str, replica: str, *, instead_of: str | None = None
) -> bool:
    """Claim ``session_id`` for ``replica`` (the one whose agent link holds its grant): a
    compare-and-set on ``served_by``, which must be unset or already ``replica`` (or, to take
    it over, ``instead_of``). False: another replica serves it (or took it over first)."""
    claimable = (
        RemoteSession.served_by == instead_of
        if instead_of is not None
        else (RemoteSession.served_by.is_(None) | (RemoteSession.served_by == replica))
    )
    result = await db.execute(
        update(RemoteSession)
        .where(RemoteSession.id == session_id, claimable)
        .values(served_by=replica)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def served_running(db: AsyncSession) -> list[tuple[str, str]]:
    """(session id, replica) of every approved or active session a replica serves."""
    rows = await db.execute(
        select(RemoteSession.id, RemoteSession.served_by).where(
            RemoteSession.state.in_((S.approved, S.active)),
            RemoteSession.served_by.is_not(None),
        )
    )
    return [(str(sid), str(by)) for sid, by in rows]


# Where each open state goes when its ticket closes or changes hands.
TICKET_GONE: dict[SessionState, SessionState] = {
    S.requested: S.failed,
    S.awaiting_approval: S.revoked,
    S.awaiting_consent: S.revoked,
    S.approved: S.revoked,
    S.active: S.ended,
}


async def open_sessions_for_ticket(db: AsyncSession, ticket: Ticket) -> list[SessionRecord]:
    return list(await SessionRepository(db).open_for_ticket(ticket.id))


async def tickets_with_open_sessions(db: AsyncSession) -> list[Ticket]:
    return await SessionRepository(db).tickets_with_open_sessions()


async def end_sessions_for_ticket(
    db: AsyncSession,
    ticket: Ticket,
    *,
    actor: Actor,
    why: str,
    only: Collection[str] | None = None,
) -> list[str]:
    """End every open session of ``ticket`` (closed or reassigned in its system), or those
    whose ids are in ``only``: active → ended, awaiting consent / approved → revoked,
    requested → failed. Each move is audited, commented and withdraws provider access like
    any other. Returns the ids moved."""
    moved: list[str] = []
    for record in await SessionRepository(db).open_for_ticket(ticket.id):
        if only is not None and record.session.id not in only:
            continue
        if await settle(db, record):
            continue  # its deadline had already passed: it ran out, the ticket did not end it
        for _ in range(3):  # a racing move (an approval) is retried from the state it won
            state = S(record.session.state)
            if state not in TICKET_GONE:
                break
            try:
                await transition(
                    db,
                    record,
                    TICKET_GONE[state],
                    actor=actor,
                    data={"end_reason": why},
                    values={"end_reason": why, "ended_by": actor.name, "deadline_at": None},
                )
            except IllegalTransition:
                continue  # transition re-read the row: go again from where it is now
            moved.append(record.session.id)
            break
    return moved


async def rate_session(
    db: AsyncSession, record: SessionRecord, *, actor: Actor, score: int, comment: str | None
) -> None:
    session = record.session
    if session.active_at is None or session.state not in (S.ended, S.revoked, S.failed):
        raise Conflict(f"session {session.id} is {session.state}; rate it once it has ended")
    if not await SessionRepository(db).set_rating(session.id, score, comment):
        raise Conflict(f"session {session.id} was already rated")
    await db.refresh(session)
    await record_event(
        db,
        EventType.session_rated,
        ticket=record.ticket.ref,
        actor=actor,
        data={"session_id": session.id, "score": score, "comment": comment},
    )


async def narrow_capabilities(db: AsyncSession, record: SessionRecord, granted: set[str]) -> None:
    """Keep only the rights the end user granted (before the approval seals and applies
    them: the receipt, the provider's grant and the agent's all read the session's list)."""
    session = record.session
    kept = [c for c in session.capabilities if c in granted]
    if kept != list(session.capabilities):
        session.capabilities = kept
        await db.flush()


async def device_sessions(db: AsyncSession, device_id: str, *, limit: int) -> list[SessionRecord]:
    """Every session on one device, newest first, deadlines applied (the end user's
    history: no principal, the caller has checked the history link)."""
    filters = SessionFilter(device_id=device_id)
    repo = SessionRepository(db)
    for session_id in await repo.due(utcnow(), filters):
        await load(db, session_id)
    return await repo.records(filters, limit=limit, offset=0)


async def count_for_device(db: AsyncSession, device_id: str) -> int:
    """Sessions that name the device (ended ones too: their audit trail keeps it)."""
    return await SessionRepository(db).count_for_device(device_id)


async def count_by_state(db: AsyncSession) -> dict[str, int]:
    """How many sessions are in each state, every state named (for the metrics gauge)."""
    counts = await SessionRepository(db).count_by_state()
    return {state.value: counts.get(state.value, 0) for state in SessionState}


async def sweep_deadlines(db: AsyncSession) -> int:
    """Expire unanswered consent and approvals, end sessions at their limit; returns moves."""
    moved = 0
    for session_id in await SessionRepository(db).due(utcnow()):
        with bound_ids(session_id=session_id):
            _, changed = await load(db, session_id)
        moved += changed
    return moved


async def forget_sessions(db: AsyncSession, ticket: Ticket) -> list[str]:
    """Erasure: blank the personal data of the ticket's sessions (the reason, the answers to
    the group's questions, the rating's comment, the end's free text); returns their ids."""
    rows = (
        await db.scalars(select(RemoteSession).where(RemoteSession.ticket_id == ticket.id))
    ).all()
    for row in rows:
        row.reason = ERASED_TEXT
        row.answers = {}
        row.rating_comment = None
        row.end_reason = ERASED_TEXT if row.end_reason else None
    await db.flush()
    return [row.id for row in rows]
