"""What a supervisor may do with the sessions of their device groups (docs/OVERSIGHT.md).

A supervisor (role ``supervisor``, scope ``sessions:supervise``) is a member of device
groups like a technician, but requests nothing: they see the live queue of those groups'
open sessions (waiting for an answer, or running: how long, which technician), read a
session there, watch its terminal read-only (``broker.gateway.access``), and end or revoke it
with a reason they must give. Users, keys and policies stay the admin's. This module holds
the rule and the queue; ``broker.sessions.service`` applies the rule to its actions.

Second-person approval: where a device group's policy asks for it (optionally only for
some ticket priorities or categories), a request waits in ``awaiting_approval`` until
another technician of the group or a supervisor of it approves (then the end user is asked)
or denies; it expires like consent. Self-approval is refused. ``broker.flows.approval``
opens the consent request after the approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.base import utcnow
from broker.devices import service as devices
from broker.devices.models import DeviceGroup
from broker.errors import IllegalTransition, PermissionDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.sessions.repository import SessionFilter, SessionRecord, SessionRepository
from broker.sessions.states import OPEN_STATES, SessionState
from broker.sessions.transitions import settle, transition
from broker.tickets.models import Ticket

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


# --- second-person approval -----------------------------------------------------------------


def approval_needed(group: DeviceGroup, ticket: Ticket) -> bool:
    """Whether ``group``'s policy asks a second person before the end user, for ``ticket``:
    always when the lists are empty, else only for the listed priorities / categories
    (compared case-blind; a ticket without the field is not in the list)."""
    if not group.approval_required:
        return False
    priorities = {p.casefold() for p in group.approval_priorities or []}
    categories = {c.casefold() for c in group.approval_categories or []}
    if priorities and (ticket.priority or "").casefold() not in priorities:
        return False
    return not categories or (ticket.category or "").casefold() in categories


async def may_approve(db: AsyncSession, principal: Principal, record: SessionRecord) -> None:
    """Refuse unless ``principal`` is a second person for ``record``: another technician of
    the device's group, or a supervisor of it. Never the requesting technician."""
    if principal.user_id is not None and principal.user_id == record.session.technician_id:
        raise PermissionDenied("you cannot approve your own request: a second person must")
    if principal.has(Scope.sessions_write) and principal.role == "technician":
        if await devices.is_member(db, record.device.group_id, principal.user_id):
            return
    elif await supervises(db, principal, record):
        return
    raise PermissionDenied(
        "a second approval comes from another technician or a supervisor of the device's group"
    )


async def decide_approval(
    db: AsyncSession,
    principal: Principal,
    record: SessionRecord,
    *,
    approve: bool,
    reason: str | None,
    consent_expires_at: datetime,
) -> None:
    """The second person's decision, sealed (``approval.granted`` / ``approval.denied``),
    then the move: on to ``awaiting_consent`` (the consent request is the caller's, a
    flow's), or ``denied``. A denial must say why, as a consent denial is a person's word."""
    await may_approve(db, principal, record)
    state = SessionState(record.session.state)
    if state is not SessionState.awaiting_approval:
        raise IllegalTransition(f"session {record.session.id} is {state}; nothing to approve")
    why = (reason or "").strip() or None
    if not approve and why is None:
        raise ValidationFailed("reason: say why the request is denied")
    data = {"session_id": record.session.id, "approver": principal.name, "reason": why}
    event = EventType.approval_granted if approve else EventType.approval_denied
    await record_event(db, event, ticket=record.ticket.ref, actor=principal.actor(), data=data)
    if approve:
        await transition(
            db,
            record,
            SessionState.awaiting_consent,
            actor=principal.actor(),
            data={
                "consent_expires_at": consent_expires_at.isoformat(),
                "approved_by": principal.name,
            },
            values={"deadline_at": consent_expires_at},
        )
    else:
        end = f"denied by {principal.name} (second approval): {why}"
        await transition(
            db,
            record,
            SessionState.denied,
            actor=principal.actor(),
            data={"end_reason": end},
            values={"end_reason": end, "ended_by": principal.name, "deadline_at": None},
        )


async def awaiting_my_approval(db: AsyncSession, principal: Principal) -> list[SessionRecord]:
    """Requests waiting for a second person that ``principal`` may approve, oldest first."""
    if principal.has(Scope.sessions_supervise) or principal.role == "technician":
        member = principal.user_id or ""
    else:
        raise PermissionDenied("second approvals come from technicians and supervisors")
    filters = SessionFilter(member_id=member, states=frozenset({SessionState.awaiting_approval}))
    repo = SessionRepository(db)
    now = utcnow()
    for session_id in await repo.due(now, filters):
        found = await repo.record(session_id)
        if found is not None:
            await settle(db, found, now)
    records = await repo.records(filters, limit=QUEUE_LIMIT, offset=0)
    records.sort(key=lambda r: (r.session.requested_at or now, r.session.id))
    return [r for r in records if r.session.technician_id != principal.user_id]
