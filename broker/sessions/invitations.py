"""Inviting an expert into a session: who may be invited, the invitation, what it opens.

The session's technician invites another technician of the device's group (the gateway's
``join`` mode admits exactly those, so nobody is invited who could not join). The
invitation is audited as ``session.expert_invited`` in the same transaction; it puts the
session in the expert's console and lets them open its page, and nothing more: joining the
terminal is still decided by ``broker.gateway.access`` and audited there.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.auth.principal import Principal
from broker.devices import service as devices
from broker.errors import Conflict, IllegalTransition, NotFound, PermissionDenied
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.sessions import service as sessions
from broker.sessions.models import SessionInvitation
from broker.sessions.repository import SessionRecord
from broker.sessions.states import OPEN_STATES, SessionState

EXPERT_ROLE = "technician"


async def invited_experts(db: AsyncSession, session_id: str) -> list[User]:
    rows = await db.execute(
        select(User)
        .join(SessionInvitation, SessionInvitation.expert_id == User.id)
        .where(SessionInvitation.session_id == session_id)
        .order_by(SessionInvitation.created_at)
    )
    return list(rows.scalars())


async def is_invited(db: AsyncSession, session_id: str, user_id: str | None) -> bool:
    if not user_id:
        return False
    found = await db.scalar(
        select(SessionInvitation.id).where(
            SessionInvitation.session_id == session_id, SessionInvitation.expert_id == user_id
        )
    )
    return found is not None


async def candidates(db: AsyncSession, record: SessionRecord) -> list[User]:
    """Technicians of the device's group, other than the session's own, not yet invited."""
    already = {u.id for u in await invited_experts(db, record.session.id)}
    members = await devices.group_members(db, record.device.group_id)
    return [
        u
        for u in members
        if u.role == EXPERT_ROLE
        and u.is_active
        and u.id != record.session.technician_id
        and u.id not in already
    ]


async def invite(
    db: AsyncSession, principal: Principal, session_id: str, expert_id: str
) -> tuple[SessionRecord, User]:
    """The session's technician invites ``expert_id``; audited as ``session.expert_invited``."""
    record = await sessions.get_session(db, principal, session_id)
    if record.session.technician_id != principal.user_id:
        raise PermissionDenied("only the session's technician invites experts")
    if SessionState(record.session.state) not in OPEN_STATES:
        raise IllegalTransition(f"session {session_id} is {record.session.state}; it is over")
    expert = next((u for u in await candidates(db, record) if u.id == expert_id), None)
    if expert is None:
        if await is_invited(db, session_id, expert_id):
            raise Conflict("this expert is already invited")
        raise NotFound("no technician of this device's group with that id to invite")
    db.add(
        SessionInvitation(
            session_id=record.session.id, expert_id=expert.id, invited_by=principal.user_id
        )
    )
    await db.flush()
    await record_event(
        db,
        EventType.session_expert_invited,
        ticket=record.ticket.ref,
        actor=principal.actor(),
        data={
            "session_id": record.session.id,
            "expert_id": expert.id,
            "expert": expert.display_name,
        },
    )
    return record, expert


async def session_for(db: AsyncSession, principal: Principal, session_id: str) -> SessionRecord:
    """The session if ``principal`` may see it in the UI: as usual, or as an invited expert."""
    try:
        return await sessions.get_session(db, principal, session_id)
    except PermissionDenied:
        if not await is_invited(db, session_id, principal.user_id):
            raise
    record, _ = await sessions.load(db, session_id)
    return record


async def invitations_for(db: AsyncSession, principal: Principal) -> list[SessionRecord]:
    """The open sessions ``principal`` is invited to, newest invitation first."""
    rows = await db.scalars(
        select(SessionInvitation.session_id)
        .where(SessionInvitation.expert_id == (principal.user_id or ""))
        .order_by(SessionInvitation.created_at.desc())
        .limit(50)
    )
    found = []
    for session_id in list(rows):
        record, _ = await sessions.load(db, session_id)
        if SessionState(record.session.state) in OPEN_STATES:
            found.append(record)
    return found
