"""The one way a session changes state: a compare-and-set, its audit event, and the move.

Every transition is ``UPDATE sessions SET state=:new, version=version+1 ... WHERE id=:id AND
state=:old AND version=:v``. Two requests racing for the same session (two approvals, an
approval and an expiry) therefore cannot both win: the loser updates no row, re-reads the
session and gets an :class:`IllegalTransition` that names the state it lost to.

The winner seals ``session.<state>`` and publishes the :class:`Move` once to the session's
:class:`Lifecycle`: what a move causes outside this table (the ticket's comment, the
provider's access, the gateway's wake-up) is registered in one place above this domain,
``broker.flows.lifecycle``, and reaches every transition through the database session
(``session.info["lifecycle"]``, set with the audit log by the sessionmaker).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import structlog
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import ClauseElement

from broker.db.base import utcnow
from broker.errors import IllegalTransition
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, Actor, record_event
from broker.sessions.models import RemoteSession
from broker.sessions.repository import SessionRecord, SessionRepository
from broker.sessions.states import TRANSITIONS, SessionState, can_transition

TIME_LIMIT = "time limit"
# States whose deadline moves them on: approval and consent expire, approval runs out, the
# time limit ends a running session.
TIMED = (
    SessionState.awaiting_approval,
    SessionState.awaiting_consent,
    SessionState.approved,
    SessionState.active,
)
# The audit event of arriving in each state (``requested`` is written by the request itself).
ARRIVED: dict[SessionState, EventType] = {
    SessionState.requested: EventType.session_requested,
    SessionState.awaiting_approval: EventType.session_awaiting_approval,
    SessionState.awaiting_consent: EventType.session_awaiting_consent,
    SessionState.approved: EventType.session_approved,
    SessionState.active: EventType.session_active,
    SessionState.ended: EventType.session_ended,
    SessionState.denied: EventType.session_denied,
    SessionState.expired: EventType.session_expired,
    SessionState.revoked: EventType.session_revoked,
    SessionState.failed: EventType.session_failed,
}
log = structlog.get_logger("broker.sessions")


@dataclass(frozen=True)
class Move:
    """One committed-to-be state change: who moved which session from where to where."""

    record: SessionRecord
    source: SessionState
    target: SessionState
    actor: Actor
    data: Mapping[str, Any]


@runtime_checkable
class Lifecycle(Protocol):
    """What a move causes outside the sessions table (implemented by broker.flows)."""

    async def moved(self, db: AsyncSession, move: Move) -> None:
        """React to ``move`` inside its transaction (and queue what waits for the commit)."""
        ...


def lifecycle_of(db: AsyncSession) -> Lifecycle:
    lifecycle = db.info.get("lifecycle")
    if not isinstance(lifecycle, Lifecycle):  # a wiring mistake: a move would go unheard
        raise RuntimeError("the session lifecycle is not wired into this database session")
    return lifecycle


def refusal(session_id: str, current: SessionState, target: SessionState) -> str:
    allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
    return (
        f"session {session_id} is {current}; cannot go to {target} "
        f"(allowed from {current}: {allowed})"
    )


async def transition(
    db: AsyncSession,
    record: SessionRecord,
    target: SessionState,
    *,
    actor: Actor,
    data: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    keep_changes: bool = False,
) -> None:
    """Move ``record.session`` to ``target``, write ``session.<target>`` to the ticket's
    stream in the same transaction and publish the move to the lifecycle. ``values`` are
    further columns set with the state."""
    session = record.session
    now = now or utcnow()
    current = SessionState(session.state)
    if not can_transition(current, target):
        raise IllegalTransition(refusal(session.id, current, target), keep_changes=keep_changes)
    columns = {f"{target.value}_at": now, **(values or {})}
    moved = {**columns, "state": target.value, "version": session.version + 1}
    if inspect(session).pending:
        # Not written yet (a request's first move): nobody else can have moved it, and the
        # INSERT carries the new state (one statement fewer).
        for key, value in moved.items():
            setattr(session, key, value)
    else:
        changed = await SessionRepository(db).compare_and_set(
            session.id, old=current, version=session.version, new=target, values=columns
        )
        if changed and not any(isinstance(v, ClauseElement) for v in columns.values()):
            # The row is what we read plus what we set (its version proves nobody else
            # wrote it): set that as loaded instead of reading it back (one statement fewer).
            for key, value in moved.items():
                set_committed_value(session, key, value)
        else:
            await db.refresh(session)
        if not changed:
            # Someone else moved it first; explain against the state it is in now.
            raise IllegalTransition(
                refusal(session.id, SessionState(session.state), target),
                keep_changes=keep_changes,
            )
    await record_event(
        db,
        ARRIVED[target],
        ticket=record.ticket.ref,
        actor=actor,
        data={
            "session_id": session.id,
            "from": current.value,
            "to": target.value,
            "technician_id": session.technician_id,
            "device_id": session.device_id,
            **(data or {}),
        },
    )
    move = Move(record, current, target, actor, data or {})
    await lifecycle_of(db).moved(db, move)
    log.info(
        "session.transition",
        session_id=session.id,
        ticket=record.ticket.ref,
        from_state=current.value,
        to_state=target.value,
    )


def is_due(session: RemoteSession, now: datetime) -> bool:
    return session.state in TIMED and session.deadline_at is not None and session.deadline_at <= now


async def settle(db: AsyncSession, record: SessionRecord, now: datetime | None = None) -> bool:
    """Apply a deadline that has passed; True if the session moved.

    Runs on every read and before every action, so a stopped sweeper never lets a stale
    state be shown or acted on. Losing a race here is fine: whoever won moved it.
    """
    now = now or utcnow()
    session = record.session
    if not is_due(session, now):
        return False
    state = SessionState(session.state)
    deadline = session.deadline_at
    data: dict[str, Any] = {"deadline_at": deadline.isoformat() if deadline else None}
    try:
        if state is SessionState.awaiting_approval:
            data["why"] = "no second person approved in time"
            await transition(db, record, SessionState.expired, actor=SYSTEM_ACTOR, data=data)
        elif state is SessionState.awaiting_consent:
            data["why"] = "consent was not given in time"
            await transition(db, record, SessionState.expired, actor=SYSTEM_ACTOR, data=data)
        elif state is SessionState.approved:
            data["why"] = "the approved time ran out before the session started"
            await transition(db, record, SessionState.expired, actor=SYSTEM_ACTOR, data=data)
        else:
            data["end_reason"] = TIME_LIMIT
            await transition(
                db,
                record,
                SessionState.ended,
                actor=SYSTEM_ACTOR,
                data=data,
                values={"end_reason": TIME_LIMIT, "ended_by": SYSTEM_ACTOR.name},
            )
    except IllegalTransition:
        return False
    return True
