"""Who may attach to a session's terminal, and the short-lived tickets WebSockets present.

A WebSocket cannot carry our CSRF header, so the browser (or ``supportbroker connect``) first
asks over normal, authenticated HTTP for a one-time ticket valid 60 s, bound to the principal,
the session and the mode; the WebSocket presents it. Modes: ``control`` (the session's
technician), ``join`` (an expert: a technician of the device's group whom the session's
technician invited, see ``broker.sessions.invitations``), ``watch`` (read-only: an
admin, or a supervisor of the device's group, see ``broker.sessions.oversight``). Each
attach is an audit event.

The technician's socket may be opened before the end user answers (:func:`attach_when_decided`).
It then waits in :class:`Waiting`: the device's signed approval attaches it in the approval's
own transaction (:func:`attach_waiting`), so the receipt, the approval, the start and their
audit events commit together, once; an approval from elsewhere wakes it through the session
signals and it attaches itself, once the device's agent has confirmed it holds the grant
(``ready``: the agent refuses a channel for a session it has not been told is approved).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.connectors import service as connectors
from broker.db.aftercommit import commit
from broker.devices.service import get_device_for
from broker.errors import (
    BrokerError,
    IllegalTransition,
    NotAuthenticated,
    PermissionDenied,
    ValidationFailed,
)
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.gateway.signals import SessionSignals
from broker.sessions import invitations, oversight
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
        if not await invitations.is_invited(db, session_id, principal.user_id):
            raise PermissionDenied("experts join only when the session's technician invited them")
        if state is not SessionState.active:
            raise IllegalTransition("an expert can join only a running session")
    elif not principal.has(Scope.sessions_admin) and not await oversight.supervises(
        db, principal, record
    ):
        raise PermissionDenied(
            "watching a session needs the sessions:admin scope, or supervising the device's group"
        )
    return record


async def attach(db: AsyncSession, principal: Principal, record: SessionRecord, mode: str) -> None:
    """Audit the attach; the technician's first attach starts the session."""
    if mode == "control" and record.session.state == SessionState.approved:
        await sessions.start_session(db, principal, record.session.id)
        return
    event = {
        "control": EventType.session_technician_attached,
        "join": EventType.session_expert_joined,
        "watch": EventType.session_supervisor_watching,
    }[mode]
    await record_event(
        db,
        event,
        ticket=record.ticket.ref,
        actor=principal.actor(),
        data={"session_id": record.session.id, "mode": mode},
    )
    if mode == "join":  # a step of the session's story, written back to the ticket
        expert = principal.name
        await connectors.expert_joined(
            db, record.ticket, session_id=record.session.id, expert=expert
        )


WithAttach = Callable[[AsyncSession, SessionRecord], Awaitable[None]]
Ready = Callable[[str, str], Awaitable[None]]  # (session id, device id)


@dataclass(eq=False)
class Waiter:
    """A technician's socket waiting for consent. The device's approval claims it and attaches
    it in the approval's own transaction (:func:`attach_waiting`); ``done`` then carries the
    record, the refusal, or ``None`` when that transaction did not commit."""

    ticket: Ticket
    with_attach: WithAttach | None
    done: asyncio.Future[SessionRecord | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    claimed: bool = False


class Waiting:
    """The sockets of this process waiting for consent, by session."""

    def __init__(self) -> None:
        self._by_session: dict[str, list[Waiter]] = {}

    def add(self, waiter: Waiter) -> None:
        self._by_session.setdefault(waiter.ticket.session_id, []).append(waiter)

    def withdraw(self, waiter: Waiter) -> None:
        found = self._by_session.get(waiter.ticket.session_id, [])
        if waiter in found:
            found.remove(waiter)
        if not found:
            self._by_session.pop(waiter.ticket.session_id, None)

    def claim(self, session_id: str) -> list[Waiter]:
        claimed = [w for w in self._by_session.pop(session_id, []) if not w.done.done()]
        for waiter in claimed:
            waiter.claimed = True
        return claimed


Claim = tuple[Waiter, SessionRecord | BrokerError]


async def attach_waiting(db: AsyncSession, waiting: Waiting, session_id: str) -> list[Claim]:
    """In the transaction that approved ``session_id``: attach the sockets waiting for it, each
    in a savepoint (a refused attach leaves the approval whole), so the approval, the start
    and their audit events share one commit. Hand the outcome over with :func:`deliver` once
    that commit is done, or :func:`release` the waiters if it fails."""
    waiters = waiting.claim(session_id)
    claims: list[Claim] = []
    try:
        for waiter in waiters:
            ticket = waiter.ticket
            savepoint = await db.begin_nested()
            try:
                record = await authorize(db, ticket.principal, session_id, ticket.mode)
                if waiter.with_attach is not None:
                    await waiter.with_attach(db, record)
                await attach(db, ticket.principal, record, ticket.mode)
            except BrokerError as exc:
                await (savepoint.commit() if exc.keep_changes else savepoint.rollback())
                claims.append((waiter, exc))
            else:
                await savepoint.commit()
                claims.append((waiter, record))
    except BaseException:
        release(waiters)
        raise
    return claims


def deliver(claims: list[Claim]) -> None:
    """The approval committed: each claimed socket gets its record or its refusal."""
    for waiter, outcome in claims:
        if waiter.done.done():  # the socket went away meanwhile
            continue
        if isinstance(outcome, BrokerError):
            waiter.done.set_exception(outcome)
        else:
            waiter.done.set_result(outcome)


def release(waiters: Iterable[Waiter]) -> None:
    """The approval did not commit: each claimed socket reads the session again itself."""
    for waiter in waiters:
        if not waiter.done.done():
            waiter.done.set_result(None)


async def attach_when_decided(
    maker: async_sessionmaker[AsyncSession],
    signals: SessionSignals,
    ticket: Ticket,
    *,
    wait_seconds: float = WAIT_SECONDS,
    with_attach: WithAttach | None = None,
    waiting: Waiting | None = None,
    ready: Ready | None = None,
) -> SessionRecord:
    """Authorise and attach the ticket's holder; a session still awaiting consent is waited
    for, woken by the commit of the decision (no polling interval in the way), then attached.
    ``with_attach`` runs after the checks and before the attach, in its transaction (a forward
    opens its channel there and audits it in the same commit). Refusals commit their audit
    record when flagged ``keep_changes``.

    With ``waiting``, the socket also waits there: an approval arriving from the device's
    agent on this process attaches it in the approval's own transaction (one commit on the
    path instead of two); approvals from elsewhere (the web page, another process) wake it
    through ``signals`` and it attaches itself, after awaiting ``ready`` outside any
    transaction (on SQLite every transaction holds the write lock): the gateway waits there
    until the device's agent has confirmed the grant, so the channel does not race it."""
    deadline = time.monotonic() + wait_seconds
    waiting = waiting if waiting is not None else Waiting()  # a private one: nobody claims
    waiter: Waiter | None = None
    readied = False
    try:
        while True:
            if waiter is not None and waiter.claimed:
                claimed = await waiter.done  # raises the refusal, if the attach was refused
                if claimed is not None:
                    return claimed
                waiter = None  # that approval rolled back: read the session again
            if waiter is None:
                waiter = Waiter(ticket, with_attach)
                waiting.add(waiter)  # before reading: an approval committed meanwhile claims it
            seen = signals.version  # before reading: a decision committed meanwhile wakes us
            async with maker() as db:
                try:
                    record = await authorize(
                        db, ticket.principal, ticket.session_id, ticket.mode, pending=True
                    )
                    if record.session.state != SessionState.awaiting_consent:
                        if waiter.claimed:
                            await db.rollback()  # that approval attached us: take its outcome
                            continue
                        waiting.withdraw(waiter)  # decided elsewhere: attach ourselves
                        if ready is not None and not readied:
                            ids = (record.session.id, record.device.id)
                            await db.rollback()
                            await ready(*ids)
                            readied = True
                            continue  # read the session again: it may have moved meanwhile
                        if with_attach is not None:
                            await with_attach(db, record)
                        await attach(db, ticket.principal, record, ticket.mode)
                        await commit(db)
                        return record
                except BrokerError as exc:
                    await (commit(db) if exc.keep_changes else db.rollback())
                    raise
                await db.rollback()
            left = deadline - time.monotonic()
            if left <= 0:
                raise IllegalTransition(f"session {ticket.session_id} is still awaiting consent")
            # Another broker process's commit does not reach our signals: re-read now and then.
            await signals.wait_after(seen, min(left, RECHECK_SECONDS))
    finally:
        if waiter is not None and not waiter.claimed:
            waiting.withdraw(waiter)
