"""SQL for sessions: the compare-and-set transition, listing with filters, deadlines.

Read queries join the ticket, technician and device rows because every view of a session
names them; the other domains' tables are only read here, never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVarTuple, cast

from sqlalchemy import ColumnElement, CursorResult, Select, func, or_, select, update

from broker.auth.models import User
from broker.db.repository import Repository
from broker.db.text import contains_text
from broker.devices.models import Device, GroupMember
from broker.evidence.events import EventType
from broker.evidence.queries import streams_with_event
from broker.sessions.models import RemoteSession
from broker.sessions.states import OPEN_STATES, SessionState
from broker.tickets.models import Ticket

# States whose deadline means something: consent expiry, or the time limit once approved.
Ts = TypeVarTuple("Ts")
TIMED_STATES = (
    SessionState.awaiting_approval,
    SessionState.awaiting_consent,
    SessionState.approved,
    SessionState.active,
)


@dataclass(frozen=True)
class SessionRecord:
    """A session with what every view of it names: ticket, technician and device."""

    session: RemoteSession
    ticket: Ticket
    technician: User
    device: Device


@dataclass(frozen=True)
class SessionFilter:
    system: str | None = None
    external_id: str | None = None
    technician_id: str | None = None
    device_id: str | None = None
    # A device's id or its exact name (the auditor's search field, typed with suggestions).
    device: str | None = None
    provider: str | None = None
    state: SessionState | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Only sessions on devices of the groups this user is a member of (a supervisor's view).
    member_id: str | None = None
    # Only sessions in one of these states (the live queue: the open ones).
    states: frozenset[SessionState] | None = None
    # Any part of the ticket's id or subject, case-insensitive (the auditor's search box).
    ticket_text: str | None = None
    # Only sessions whose ticket's audit log holds an event of this type (within since/until
    # when given): the auditor's "what happened" search.
    event_type: EventType | None = None


class SessionRepository(Repository[RemoteSession]):
    model = RemoteSession

    def _records(self) -> Select[RemoteSession, Ticket, User, Device]:
        return (
            select(RemoteSession, Ticket, User, Device)
            .join(Ticket, Ticket.id == RemoteSession.ticket_id)
            .join(User, User.id == RemoteSession.technician_id)
            .join(Device, Device.id == RemoteSession.device_id)
        )

    async def record(self, session_id: str) -> SessionRecord | None:
        row = (await self.db.execute(self._records().where(RemoteSession.id == session_id))).first()
        return SessionRecord(row[0], row[1], row[2], row[3]) if row is not None else None

    async def records(
        self, filters: SessionFilter, *, limit: int, offset: int
    ) -> list[SessionRecord]:
        # Page first, then join: the page's ids come from the sessions table alone (joined to
        # tickets only when a ticket filter needs it), in requested_at order from an index;
        # only those rows are joined to their ticket, technician and device. Joining first
        # made the database join every matching session before it could cut the page.
        # Both descending: one index (…, requested_at, id) read backwards gives the order;
        # a mixed direction made the database sort every matching row to cut one page.
        order = (RemoteSession.requested_at.desc(), RemoteSession.id.desc())
        page = (
            _filtered(_joined(select(RemoteSession.id), filters), filters)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
            .subquery()
        )
        stmt = self._records().join(page, page.c.id == RemoteSession.id).order_by(*order)
        rows = (await self.db.execute(stmt)).all()
        return [SessionRecord(row[0], row[1], row[2], row[3]) for row in rows]

    async def open_for_ticket(self, ticket_id: str) -> list[SessionRecord]:
        """The ticket's sessions that are not over yet, oldest first."""
        stmt = (
            self._records()
            .where(RemoteSession.ticket_id == ticket_id, RemoteSession.state.in_(OPEN_STATES))
            .order_by(RemoteSession.requested_at, RemoteSession.id)
        )
        rows = (await self.db.execute(stmt)).all()
        return [SessionRecord(row[0], row[1], row[2], row[3]) for row in rows]

    async def tickets_with_open_sessions(self, limit: int = 500) -> list[Ticket]:
        """Tickets that have a session not over yet (the ones whose system is watched)."""
        stmt = (
            select(Ticket)
            .where(
                Ticket.id.in_(
                    select(RemoteSession.ticket_id).where(RemoteSession.state.in_(OPEN_STATES))
                )
            )
            .order_by(Ticket.id)
            .limit(limit)
        )
        return list((await self.db.scalars(stmt)).all())

    async def due(self, now: datetime, filters: SessionFilter | None = None) -> list[str]:
        """Ids of sessions whose current state ran out (consent expiry or time limit)."""
        stmt = select(RemoteSession.id).where(
            RemoteSession.state.in_(TIMED_STATES), RemoteSession.deadline_at <= now
        )
        stmt = stmt.order_by(RemoteSession.deadline_at).limit(500)
        due = list((await self.db.scalars(stmt)).all())
        if not due or filters is None:
            return due
        # The filters apply to the few due sessions found above: in one statement the
        # planner could walk a filter's index instead (every session of a provider, say).
        narrowed = select(RemoteSession.id).where(RemoteSession.id.in_(due))
        narrowed = _filtered(_joined(narrowed, filters), filters)
        kept = set((await self.db.scalars(narrowed)).all())
        return [i for i in due if i in kept]

    async def lock_technician(self, user_id: str) -> None:
        """Serialise session requests of one technician (``FOR UPDATE``; SQLite is already
        serialised by ``BEGIN IMMEDIATE`` and SQLAlchemy omits the clause there)."""
        await self.db.execute(select(User.id).where(User.id == user_id).with_for_update())

    async def count_open(self, technician_id: str) -> int:
        stmt = select(func.count()).where(
            RemoteSession.technician_id == technician_id,
            RemoteSession.state.in_(OPEN_STATES),
        )
        return int(await self.db.scalar(stmt) or 0)

    async def count_for_device(self, device_id: str) -> int:
        stmt = select(func.count()).where(RemoteSession.device_id == device_id)
        return int(await self.db.scalar(stmt) or 0)

    async def count_by_state(self) -> dict[str, int]:
        rows = await self.db.execute(
            select(RemoteSession.state, func.count()).group_by(RemoteSession.state)
        )
        return {str(state): int(n) for state, n in rows.all()}

    async def compare_and_set(
        self,
        session_id: str,
        *,
        old: SessionState,
        version: int,
        new: SessionState,
        values: dict[str, Any],
    ) -> bool:
        """Move ``old`` → ``new`` only if nobody moved the row since we read ``version``."""
        stmt = (
            update(RemoteSession)
            .where(
                RemoteSession.id == session_id,
                RemoteSession.state == old.value,
                RemoteSession.version == version,
            )
            .values(state=new.value, version=RemoteSession.version + 1, **values)
            .execution_options(synchronize_session=False)
        )
        result = cast(CursorResult[Any], await self.db.execute(stmt))
        return result.rowcount == 1

    async def set_rating(self, session_id: str, score: int, comment: str | None) -> bool:
        """Store a rating once: a second rating (or a racing one) changes nothing."""
        stmt = (
            update(RemoteSession)
            .where(RemoteSession.id == session_id, RemoteSession.rating.is_(None))
            .values(rating=score, rating_comment=comment)
            .execution_options(synchronize_session=False)
        )
        result = cast(CursorResult[Any], await self.db.execute(stmt))
        return result.rowcount == 1


def _device_clauses(f: SessionFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if f.device_id is not None:
        clauses.append(RemoteSession.device_id == f.device_id)
    if f.device is not None:
        named = select(Device.id).where(or_(Device.id == f.device, Device.name == f.device))
        clauses.append(RemoteSession.device_id.in_(named))
    return clauses


def _joined(stmt: Select[*Ts], f: SessionFilter) -> Select[*Ts]:
    """``stmt`` joined to the session's ticket when the event filter needs it."""
    if f.event_type is None:
        return stmt
    return stmt.join(Ticket, Ticket.id == RemoteSession.ticket_id)


def _filtered(stmt: Select[*Ts], f: SessionFilter) -> Select[*Ts]:
    # Ticket filters are subqueries on the tickets table (its unique (system, external_id)
    # index, one scan for a text): the page never joins tickets for them (the event filter
    # does, see below), so no walk of the sessions tests each one's ticket.
    tickets = []
    if f.system is not None:
        tickets.append(Ticket.system == f.system)
    if f.external_id is not None:
        tickets.append(Ticket.external_id == f.external_id)
    if tickets:
        stmt = stmt.where(RemoteSession.ticket_id.in_(select(Ticket.id).where(*tickets)))
    if f.technician_id is not None:
        stmt = stmt.where(RemoteSession.technician_id == f.technician_id)
    stmt = stmt.where(*_device_clauses(f))
    if f.provider is not None:
        stmt = stmt.where(RemoteSession.provider == f.provider)
    if f.state is not None:
        stmt = stmt.where(RemoteSession.state == f.state.value)
    if f.since is not None:
        stmt = stmt.where(RemoteSession.requested_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(RemoteSession.requested_at < f.until)
    if f.member_id is not None:
        groups = select(GroupMember.group_id).where(GroupMember.user_id == f.member_id)
        devices = select(Device.id).where(Device.group_id.in_(groups))
        stmt = stmt.where(RemoteSession.device_id.in_(devices))
    if f.states is not None:
        stmt = stmt.where(RemoteSession.state.in_([s.value for s in f.states]))
    if f.event_type is not None:
        # Joined (``_joined``), not a subquery on tickets: the planner then walks the
        # sessions in page order and tests each ticket's stream against the event index,
        # where a subquery on tickets computed every ticket's stream first.
        ref = Ticket.system + ":" + Ticket.external_id  # the ticket's stream (Ticket.ref)
        stmt = stmt.where(ref.in_(streams_with_event(f.event_type, f.since, f.until)))
    if f.ticket_text:
        escaped = f.ticket_text.lower().replace("\\", "\\\\").replace("%", "\\%")
        pattern = "%" + escaped.replace("_", "\\_") + "%"
        # A part of a text: no index serves it. The tickets are scanned once here; as a
        # join condition the same test ran once per session, walked in page order.
        matching = select(Ticket.id).where(
            or_(contains_text(Ticket.external_id, pattern), contains_text(Ticket.subject, pattern))
        )
        stmt = stmt.where(RemoteSession.ticket_id.in_(matching))
    return stmt
