"""What a supervisor may do with the sessions of their device groups (docs/OVERSIGHT.md).

A supervisor (role ``supervisor``, scope ``sessions:supervise``) is a member of device
groups like a technician, but requests nothing: they see the live queue of those groups'
open sessions (waiting for an answer, or running: how long, which technician), read a
session there, watch its terminal read-only (``broker.gateway.access``), and end or revoke it
with a reason they must give. Users, keys and policies stay the admin's. This module holds
the rule and the queue; ``broker.sessions.service`` applies the rule to its actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.base import utcnow
from broker.devices import service as devices
from broker.errors import PermissionDenied, ValidationFailed
from broker.sessions.repository import SessionFilter, SessionRecord, SessionRepository
from broker.sessions.states import OPEN_STATES, SessionState
from broker.sessions.transitions import settle

# Waiting: the end user (or, with a policy, a second person) has not answered yet.
WAITING = frozenset({SessionState.requested, SessionState.awaiting_consent})
QUEUE_LIMIT = 200


async def supervises(db: AsyncSession, principal: Principal, record: SessionRecord) -> bool:
    """Whether ``principal`` supervises the device group of ``record``'s device."""
    if not principal.has(Scope.sessions_supervise):
        return False
    return await devices.is_member(db, record.device.group_id, principal.user_id)


def reason_needed(reason: str | None, action: str) -> str:
    """A supervisor's end or revoke must say why: it interrupts someone else's work."""
    if reason is None or not reason.strip():
        raise ValidationFailed(f"reason: a supervisor who {action} a session must give a reason")
    return reason.strip()


@dataclass(frozen=True)
class QueueEntry:
    record: SessionRecord
    waiting: bool  # not yet answered (requested, awaiting consent); else approved or active
    age_seconds: int  # since the request


async def queue(
    db: AsyncSession, principal: Principal, now: datetime | None = None
) -> list[QueueEntry]:
    """The open sessions ``principal`` oversees, oldest request first: a supervisor's groups,
    or every group for an admin (who may end and revoke anyone's session already)."""
    if principal.has(Scope.sessions_admin):
        member = None
    elif principal.has(Scope.sessions_supervise):
        member = principal.user_id or ""
    else:
        raise PermissionDenied("the live queue is for supervisors and admins")
    now = now or utcnow()
    filters = SessionFilter(member_id=member, states=OPEN_STATES)
    repo = SessionRepository(db)
    # Run-out deadlines first, so the queue never shows a request that has already expired.
    for session_id in await repo.due(now, filters):
        found = await repo.record(session_id)
        if found is not None:
            await settle(db, found, now)
    records = await repo.records(filters, limit=QUEUE_LIMIT, offset=0)
    records.sort(key=lambda r: (r.session.requested_at or now, r.session.id))
    return [
        QueueEntry(
            record=r,
            waiting=SessionState(r.session.state) in WAITING,
            age_seconds=max(0, int((now - (r.session.requested_at or now)).total_seconds())),
        )
        for r in records
    ]
