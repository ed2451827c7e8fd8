"""What auditors and admins do with the audit log: timeline, verification, export, erasure.

Reading content is itself evidence: every timeline view with payloads, every export and every
erasure is recorded before the content leaves (in the same transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import schema
from audit.checkpoint import SignedCheckpoint
from audit.errors import AuditError
from audit.merkle import verify_consistency
from audit.reader import StreamQuery
from audit.records import to_micros
from audit.store import AuditLog, ReadRecord
from audit.verify import VerifyReport
from broker.errors import AuditFailure, Conflict, NotFound, ValidationFailed
from broker.evidence.events import SECURITY_EVENTS, EventType, event_named
from broker.evidence.service import (
    SYSTEM_STREAM,
    Actor,
    audit_log_of,
    flush_events,
    record_event,
)


class Caller(Protocol):
    """Whoever asks (an authenticated principal): the audit records them as the actor."""

    def actor(self) -> Actor: ...


@dataclass(frozen=True)
class Timeline:
    stream: str
    records: list[ReadRecord]
    chain_ok: bool
    problem: str | None


def _check_chain(log: AuditLog, raw: list[Any]) -> str | None:
    """Per-record integrity for the timeline: sequence and links of the ticket's chain."""
    from audit.records import ZERO_HASH, record_leaf_hash

    prev = ZERO_HASH
    for seq, record in enumerate(raw, start=1):
        if record.stream_seq != seq or record.prev_hash != prev:
            return f"record {record.record_id} breaks the ticket's chain"
        if record_leaf_hash(log.log_id, record) != record.leaf_hash:
            return f"record {record.record_id} was altered"
        prev = record.leaf_hash
    return None


async def timeline(db: AsyncSession, principal: Caller, stream: str) -> Timeline:
    log = audit_log_of(db)
    conn = await db.connection()
    raw = await log.records(conn, stream=stream)
    if not raw:
        raise NotFound(f"the audit log has no events for {stream}")
    problem = _check_chain(log, raw)
    try:
        records = await log.read_stream(conn, stream)
    except AuditError as exc:
        problem = problem or str(exc)
        records = []
    await record_event(
        db,
        EventType.audit_timeline_viewed,
        ticket=stream if stream != SYSTEM_STREAM else None,
        actor=principal.actor(),
        data={"records": len(raw)},
    )
    return Timeline(stream, records, problem is None, problem)


def system_filter(kind: str, since: str, until: str) -> tuple[tuple[str, ...], Any, Any]:
    """The system-event search as typed: ``kind`` is ``security`` (the default), ``all`` or
    one event type of the catalogue; ``since``/``until`` are days (YYYY-MM-DD, inclusive,
    UTC). Anything else is a 422 that says what to give."""
    if kind in ("", "security"):
        types: tuple[str, ...] = tuple(sorted(SECURITY_EVENTS))
    elif kind == "all":
        types = ()
    elif event_named(kind) is not None:
        types = (kind,)
    else:
        raise ValidationFailed(
            f"event_type: {kind!r} is not an event type; give 'security', 'all' or a name "
            "from the catalogue (docs/AUDIT.md)"
        )
    first, last = _day(since, "since"), _day(until, "until")
    if first is not None and last is not None and last < first:
        raise ValidationFailed("until: the end of the range is before its start")
    start = datetime.combine(first, time.min, UTC) if first else None
    end = datetime.combine(last + timedelta(days=1), time.min, UTC) if last else None
    return types, start, end


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: give a date as YYYY-MM-DD") from exc


async def system_events(
    db: AsyncSession,
    principal: Caller,
    *,
    event_types: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[ReadRecord], bool]:
    """A page of the log's own (``_system``) events, newest first, and whether more follow.
    Reading them is recorded like reading a timeline."""
    log = audit_log_of(db)
    query = StreamQuery(SYSTEM_STREAM, event_types, since, until, limit, offset)
    found, more = await log.search_stream(await db.connection(), query)
    await record_event(
        db,
        EventType.audit_timeline_viewed,
        ticket=None,
        actor=principal.actor(),
        data={"stream": SYSTEM_STREAM, "records": len(found), "event_types": list(event_types)},
    )
    return found, more


def streams_with_event(
    event_type: EventType, since: datetime | None, until: datetime | None
) -> Select[tuple[str]]:
    """The ticket streams (``system:external_id``) whose log holds an ``event_type`` event
    that occurred in [since, until): a subquery for the auditor's session search. It reads
    only the records' clear headers (stream, type, time), never a payload, so it needs no
    key and records no read. The index ``ix_audit_records_type_time`` (type, time, stream)
    answers it without reading the records table (audit/schema.py)."""
    c = schema.records.c
    stmt = select(c.stream).where(c.event_type == event_type.value, c.stream != SYSTEM_STREAM)
    if since is not None:
        stmt = stmt.where(c.occurred_at_us >= to_micros(since))
    if until is not None:
        stmt = stmt.where(c.occurred_at_us < to_micros(until))
    # No DISTINCT: ``IN`` needs none, and with it SQLite read the (stream, seq) index in
    # stream order (every record) instead of the (type, time, stream) one.
    return stmt


async def verify_all(
    db: AsyncSession,
    progress: Callable[[int, int], None] | None = None,
    *,
    processes: int = 1,
    published: SignedCheckpoint | None = None,
) -> VerifyReport:
    """Commit what the request has done so far, then verify the whole log in its own snapshot
    (``processes`` > 1: in worker processes; ``progress(done, total)`` as it goes), and
    against the ``published`` checkpoint if given: a rollback of records, tree state and
    checkpoints together is consistent in itself, only a head kept outside shows it.

    The request's transaction holds the audit log's writer lock once it has appended (e.g.
    ``auth.token_used``), and on SQLite the database's write lock from its first statement:
    kept open through a long verification, it stalled every other writer (on SQLite past the
    busy timeout). The session stays usable afterwards (a new transaction).
    """
    log = audit_log_of(db)
    await db.commit()
    engine: Any = db.bind
    async with engine.connect() as conn:
        return await log.verify_log(
            conn, progress, processes=processes, snapshot=True, published=published
        )


def published_head(db: AsyncSession) -> SignedCheckpoint | None:
    """The latest checkpoint published outside the database (None: nothing published)."""
    log = audit_log_of(db)
    if log.publisher is None:
        return None
    try:
        return log.publisher.latest()
    except (OSError, AuditError) as exc:
        raise AuditFailure(f"the published checkpoints cannot be read: {exc}") from exc


async def current_checkpoint(db: AsyncSession) -> SignedCheckpoint | None:
    """The latest signed checkpoint, covering every record sealed so far: checkpoints come
    on a cadence, so one is signed now if records are not yet covered (None: empty log)."""
    log = audit_log_of(db)
    conn = await db.connection()
    if await log.uncovered(conn):
        try:
            async with conn.begin_nested():  # a refusal leaves the request's work whole
                signed = await log.sign_checkpoint(conn)
        except AuditError:  # the records do not reach the stored head: show the last one
            signed = None
        if signed is not None:
            return signed
    return await log.latest_checkpoint(conn)


async def bundle_of(db: AsyncSession, stream: str, *, include_plaintext: bool) -> bytes:
    """The ticket's evidence bundle, covering every record sealed so far: a checkpoint is
    signed first if the latest one does not cover the log (checkpoints come on a cadence)."""
    log = audit_log_of(db)
    await flush_events(db)
    conn = await db.connection()
    await log.sign_checkpoint(conn)
    return await log.export_bundle(conn, stream, include_plaintext=include_plaintext)


async def export(
    db: AsyncSession, principal: Caller, stream: str, *, include_plaintext: bool, reason: str
) -> bytes:
    if not reason.strip():
        raise ValidationFailed("reason: say why you export this evidence")
    try:
        data = await bundle_of(db, stream, include_plaintext=include_plaintext)
    except AuditError as exc:
        raise NotFound(str(exc)) from exc
    await record_event(
        db,
        EventType.evidence_exported,
        ticket=stream,
        actor=principal.actor(),
        data={"include_plaintext": include_plaintext, "reason": reason, "bytes": len(data)},
    )
    return data


async def erase(
    db: AsyncSession,
    principal: Caller,
    stream: str,
    *,
    reason: str,
    details: dict[str, Any] | None = None,
) -> int:
    """Crypto-shred a ticket's content; returns the position of the erasure record in the
    system stream (where a later erasure of the ticket cannot shred it). ``details`` (what
    else the erasure removed) go into that record. Use :func:`broker.flows.erasure.
    erase_ticket`, which erases the plaintext copies first."""
    if stream == SYSTEM_STREAM:
        raise ValidationFailed("the system stream cannot be erased")
    if not reason.strip():
        raise ValidationFailed("reason: say why this ticket's content is erased")
    log = audit_log_of(db)
    await flush_events(db)  # this request's events come before the erasure in the log
    try:
        appended = await log.erase_stream(
            await db.connection(),
            stream,
            actor={**principal.actor().as_payload(), "reason": reason},
            record_in=SYSTEM_STREAM,
            details=details,
        )
    except AuditError as exc:
        raise Conflict(str(exc)) from exc
    return appended.record.position


@dataclass(frozen=True)
class PublishedStatus:
    ok: bool
    detail: str


async def compare_with_published(db: AsyncSession) -> PublishedStatus:
    """Is the database at or ahead of the last checkpoint published outside it?

    Cheaper than a full verification: the published head must be a prefix of our tree
    (a consistency proof over the stored leaf hashes).
    """
    log = audit_log_of(db)
    published = log.publisher.latest() if log.publisher is not None else None
    if published is None:
        return PublishedStatus(True, "nothing published yet")
    try:
        log.signer.verifier.verify(published.note)
    except AuditError as exc:
        return PublishedStatus(False, f"the published checkpoint is not ours: {exc}")
    conn = await db.connection()
    ours = await log.latest_checkpoint(conn)
    size = 0 if ours is None else ours.size
    if published.size > size:
        return PublishedStatus(
            False,
            f"ROLLBACK: a checkpoint at size {published.size} was published, "
            f"the database holds {size} records",
        )
    assert ours is not None
    if published.size == size:
        same = published.root == ours.root
        return PublishedStatus(
            same, "at the published checkpoint" if same else "FORK: roots differ"
        )
    proof = await log.consistency_proof(conn, published.size, size)
    try:
        verify_consistency(published.size, size, published.root, ours.root, proof)
    except AuditError as exc:
        return PublishedStatus(False, f"FORK: {exc}")
    return PublishedStatus(True, f"consistent with the published checkpoint at {published.size}")


async def publish(db: AsyncSession) -> int:
    log = audit_log_of(db)
    latest = await log.publish(await db.connection())
    return 0 if latest is None else latest.size
