"""Who may attach to a session's terminal, and the short-lived tickets WebSockets present.

A WebSocket cannot carry our CSRF header, so the browser (or ``supportbroker connect``) first
asks over normal, authenticated HTTP for a one-time ticket valid 60 s, bound to the principal,
the session and the mode; the WebSocket presents it. Modes: ``control`` (the session's
technician), ``join`` (an expert: a technician of the device's group whom the session's
technician invited, see ``broker.ui.invites``), ``watch`` (a
supervisor: an admin, read-only). Each attach is an audit event.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.devices.service import get_device_for
from broker.errors import (
    BrokerError,
    IllegalTransition,
    NotAuthenticated,
    PermissionDenied,
    ValidationFailed,
)
from broker.evidence.service import record_event
from broker.gateway.signals import SessionSignals
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord
from broker.sessions.states import SessionState

TICKET_SECONDS = 60.0
WAIT_SECONDS = 900.0  # a technician's socket waits at most this long for the user's answer
RECHECK_SECONDS = 1.0
MODES = ("control", "join", "watch")


@dataclass(frozen=True)
class Ticket:
    principal: Principal
    session_id: str
    mode: str
    expires: float


class Tickets:
    """In-process one-time tickets (the WebSocket reaches the process that issued them)."""

    def __init__(self) -> None:
        self._items: dict[str, Ticket] = {}

    def issue(self, principal: Principal, session_id: str, mode: str) -> str:
        now = time.monotonic()
        self._items = {k: v for k, v in self._items.items() if v.expires > now}
        secret = secrets.token_urlsafe(32)
        self._items[secret] = Ticket(principal, session_id, mode, now + TICKET_SECONDS)
        return secret

    def redeem(self, secret: str) -> Ticket:
        ticket = self._items.pop(secret, None)
        if ticket is None or ticket.expires <= time.monotonic():
            raise NotAuthenticated("terminal ticket unknown, used or expired")
        return ticket


async def authorize(
    db: AsyncSession, principal: Principal, session_id: str, mode: str, *, pending: bool = False
) -> SessionRecord:
    """Check ``principal`` may attach in ``mode``; read-only checks, no state change.

    ``pending``: the session's technician may also hold a session still awaiting consent
    (the socket then waits for the decision: :func:`attach_when_decided`)."""
    if mode not in MODES:
        raise ValidationFailed(f"mode must be one of {', '.join(MODES)}")
    record = (
        await sessions.get_session(db, principal, session_id)
        if mode == "control"
        else (await sessions.load(db, session_id))[0]
    )
    state = SessionState(record.session.state)
    allowed = {SessionState.approved, SessionState.active}
    if pending and mode == "control":
        allowed.add(SessionState.awaiting_consent)
    if state not in allowed:
        raise IllegalTransition(f"session {session_id} is {state}; nothing to attach to")
    if mode == "control":
        if record.session.technician_id != principal.user_id:
            raise PermissionDenied("only the session's technician controls it")
    elif mode == "join":
        if principal.role != "technician":
            raise PermissionDenied("experts joining a session must be technicians")
        await get_device_for(db, principal, record.device.id)
        from broker.ui import invites  # the invitation lives with the console that makes it

        if not await invites.is_invited(db, session_id, principal.user_id):
            raise PermissionDenied("experts join only when the session's technician invited them")
        if state is not SessionState.active:
            raise IllegalTransition("an expert can join only a running session")
    elif not principal.has(Scope.sessions_admin):
        raise PermissionDenied("watching a session needs the sessions:admin scope")
    return record


async def attach(db: AsyncSession, principal: Principal, record: SessionRecord, mode: str) -> None:
    """Audit the attach; the technician's first attach starts the session."""
    if mode == "control" and record.session.state == SessionState.approved:
        await sessions.start_session(db, principal, record.session.id)
        return
    event = {
        "control": "session.technician_attached",
        "join": "session.expert_joined",
        "watch": "session.supervisor_watching",
    }[mode]
    await record_event(
        db,
        event,
        ticket=record.ticket.ref,
        actor=principal.actor(),
        data={"session_id": record.session.id, "mode": mode},
    )


async def attach_when_decided(
    maker: async_sessionmaker[AsyncSession],
    signals: SessionSignals,
    ticket: Ticket,
    *,
    wait_seconds: float = WAIT_SECONDS,
    with_attach: Callable[[AsyncSession, SessionRecord], Awaitable[None]] | None = None,
) -> SessionRecord:
    """Authorise and attach the ticket's holder; a session still awaiting consent is waited
    for, woken by the commit of the decision (no polling interval in the way), then attached.
    ``with_attach`` runs after the checks and before the attach, in its transaction (a forward
    opens its channel there and audits it in the same commit). Refusals commit their audit
    record when flagged ``keep_changes``."""
    deadline = time.monotonic() + wait_seconds
    while True:
        seen = signals.version  # before reading: a decision committed meanwhile wakes us
        async with maker() as db:
            try:
                record = await authorize(
                    db, ticket.principal, ticket.session_id, ticket.mode, pending=True
                )
                if record.session.state != SessionState.awaiting_consent:
                    if with_attach is not None:
                        await with_attach(db, record)
                    await attach(db, ticket.principal, record, ticket.mode)
                    await db.commit()
                    return record
            except BrokerError as exc:
                await (db.commit() if exc.keep_changes else db.rollback())
                raise
            await db.rollback()
        left = deadline - time.monotonic()
        if left <= 0:
            raise IllegalTransition(f"session {ticket.session_id} is still awaiting consent")
        # Another broker process's commit does not reach our signals: re-read now and then.
        await signals.wait_after(seen, min(left, RECHECK_SECONDS))
