"""``record_event``: every state change and security-relevant action goes through here.

Events are collected per transaction and sealed in **one** append just before it commits
(``before_commit`` of :class:`broker.db.session.BrokerSession`, which every broker
sessionmaker uses: requests, background tasks and the CLI alike). The change and its evidence
still commit together or not at all: if the append fails, the commit raises
:class:`AuditFailure` and nothing is written. Events recorded inside a savepoint that rolls
back are dropped with it. The append does not sign a checkpoint: the broker signs on a
cadence (:mod:`broker.evidence.checkpoints`).

The audit log and the settings travel with the database session (``session.info``): set once
where the sessionmaker is built (``broker.db.engine.create_sessionmaker(engine, info=...)``
in ``broker/app.py``, ``broker/cli.py`` and ``broker/serve.py``), with the log that
:func:`broker.evidence.setup.build_audit_log` builds from the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util import await_only

from audit.appender import Appended
from audit.reader import StreamQuery
from audit.store import AuditLog, NewEvent, Prepared
from broker.db.session import BrokerSession
from broker.errors import AuditFailure
from broker.evidence.events import EventType, event_named

SYSTEM_STREAM = "_system"
# What an erasure leaves in a plaintext column that must hold text (docs/AUDIT.md, data map).
ERASED_TEXT = "[erased]"
PENDING = "audit.pending"


@dataclass(frozen=True)
class Actor:
    """Who did it. Goes into the encrypted payload, never into the cleartext header."""

    kind: str  # user | token | end_user | system | agent | ticket_system
    id: str | None = None
    name: str | None = None
    role: str | None = None
    ip: str | None = None

    def as_payload(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


SYSTEM_ACTOR = Actor(kind="system", name="supportbroker")


def audit_log_of(db: AsyncSession | Session) -> AuditLog:
    log = db.info.get("audit_log")
    if log is None:
        raise AuditFailure("the audit log is not configured for this database session")
    if not isinstance(log, AuditLog):  # pragma: no cover - a wiring mistake
        raise AuditFailure("session.info['audit_log'] is not an AuditLog")
    return log


@dataclass
class Pending:
    """One transaction's events, checked and encoded as they were recorded."""

    items: list[Prepared] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    # savepoint -> how many events and callbacks were recorded before it began
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)
    # called with the sealed events, in the transaction, before its final flush
    sealed: list[Callable[[list[Appended]], None]] = field(default_factory=list)

    def add(self, prepared: Prepared, event_type: str) -> int:
        self.items.append(prepared)
        self.types.append(event_type)
        return len(self.items) - 1

    def batch(self) -> Prepared:
        items = self.items
        if len(items) == 1:
            return items[0]
        return Prepared(
            [e for p in items for e in p.events],
            [t for p in items for t in p.plaintexts],
            [t for p in items for t in p.times],
            [i for p in items for i in p.ids],
            b"".join(p.nonces for p in items),
        )

    def clear(self) -> None:
        self.items.clear()
        self.types.clear()
        self.marks.clear()
        self.sealed.clear()


def _pending(db: AsyncSession | Session) -> Pending:
    pending = db.info.get(PENDING)
    if not isinstance(pending, Pending):
        pending = db.info[PENDING] = Pending()
    return pending


async def record_event(
    db: AsyncSession,
    event_type: EventType,
    *,
    ticket: str | None,
    actor: Actor,
    data: Mapping[str, Any] | None = None,
) -> int:
    """Add an audit event to the current transaction; it is sealed when the transaction
    commits (one append for all its events). A payload that cannot be sealed raises
    :class:`AuditFailure` here, where it was recorded. Returns the event's index in the
    transaction (see :func:`on_sealed`).

    Only the catalogue's events (:class:`broker.evidence.events.EventType`) are recorded: a
    name the catalogue does not explain is refused before anything is written."""
    if event_named(event_type) is not event_type:
        raise AuditFailure(f"audit event {event_type!r} is not in the catalogue (EventType)")
    payload: dict[str, Any] = {"actor": actor.as_payload(), "data": dict(data or {})}
    new = NewEvent(stream=ticket or SYSTEM_STREAM, event_type=event_type, payload=payload)
    try:
        prepared = audit_log_of(db).prepare([new])
    except AuditFailure:
        raise
    except Exception as exc:
        raise AuditFailure(f"could not record audit event {event_type}: {exc}") from exc
    if not db.in_transaction():
        await db.connection()  # begin it: a rollback must take this event with it
    return _pending(db).add(prepared, event_type)


async def sealed_data(
    db: AsyncSession, stream: str, event_type: EventType, *, limit: int = 200
) -> list[tuple[Any, dict[str, Any]]]:
    """When and with what ``data`` one type of event was sealed in ``stream``, oldest first
    (at most the ``limit`` newest; events whose key was destroyed are left out). For pages
    that show a party what was recorded about them; reading is not itself recorded here."""
    query = StreamQuery(stream, (event_type.value,), limit=limit)
    found, _ = await audit_log_of(db).search_stream(await db.connection(), query)
    return [
        (r.occurred_at, dict(r.payload.get("data") or {}))
        for r in reversed(found)
        if r.payload is not None and not r.erased
    ]


@dataclass(frozen=True)
class SealedEvent:
    """One sealed event as a party it concerns may download it: where it sits in the log."""

    position: int
    record_id: str
    event_type: str
    occurred_at: Any
    data: dict[str, Any]


async def sealed_events(
    db: AsyncSession, stream: str, *event_types: EventType, limit: int = 200
) -> list[SealedEvent]:
    """Like :func:`sealed_data`, with each event's log position and record id (so a proof
    of its inclusion can be asked for)."""
    query = StreamQuery(stream, tuple(t.value for t in event_types), limit=limit)
    found, _ = await audit_log_of(db).search_stream(await db.connection(), query)
    return [
        SealedEvent(
            r.position, r.record_id, r.event_type, r.occurred_at, dict(r.payload.get("data") or {})
        )
        for r in reversed(found)
        if r.payload is not None and not r.erased
    ]


def on_sealed(db: AsyncSession, callback: Callable[[list[Appended]], None]) -> None:
    """Call ``callback`` with this transaction's sealed events (in recording order) once they
    are appended, still inside the transaction and before its last flush: ORM objects it
    changes are written in the same commit (the evidence digest records its position)."""
    _pending(db).sealed.append(callback)


async def flush_events(db: AsyncSession) -> list[Appended]:
    """Seal the events recorded so far now (an erasure must follow them in the log)."""
    return await _seal(audit_log_of(db), await db.connection(), _pending(db))


async def _seal(log: AuditLog, conn: AsyncConnection, pending: Pending) -> list[Appended]:
    if not pending.items:
        return []
    batch, types, callbacks = pending.batch(), list(pending.types), list(pending.sealed)
    pending.clear()
    try:
        appended = await log.append(conn, batch, sign=False)
    except AuditFailure:
        raise
    except Exception as exc:
        raise AuditFailure(
            f"could not record audit event{'s' if len(types) > 1 else ''} "
            f"{', '.join(dict.fromkeys(types))}: {exc}"
        ) from exc
    for callback in callbacks:
        callback(appended)
    return appended


def _seal_before_commit(session: Session) -> None:
    """The one append of a transaction, in its commit (runs in SQLAlchemy's greenlet)."""
    if session.in_nested_transaction():  # a savepoint is released, not the transaction
        return
    pending = session.info.get(PENDING)
    if not pending or not pending.items:
        return
    conn = AsyncConnection._retrieve_proxy_for_target(session.connection())
    await_only(_seal(audit_log_of(session), conn, pending))


def _savepoint_begun(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        pending = _pending(session)
        pending.marks[id(transaction)] = (len(pending.items), len(pending.sealed))


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    pending = session.info.get(PENDING)
    if not pending:
        return
    if previous.nested:
        mark = pending.marks.pop(id(previous), None)
        if mark is not None:  # the savepoint's events (and what waited for them) go with it
            del pending.items[mark[0] :]
            del pending.types[mark[0] :]
            del pending.sealed[mark[1] :]
    elif previous.parent is None:
        pending.clear()


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and (pending := session.info.get(PENDING)):
        pending.clear()  # sealed and committed, or rolled back: nothing carries over


event.listen(BrokerSession, "before_commit", _seal_before_commit)
event.listen(BrokerSession, "after_transaction_create", _savepoint_begun)
event.listen(BrokerSession, "after_soft_rollback", _rolled_back)
event.listen(BrokerSession, "after_transaction_end", _ended)
