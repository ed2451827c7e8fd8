"""The export itself: read records after a target's cursor, hand them to its sender, and
advance the cursor only once the receiver acknowledged them.

Delivery is at least once, in log order: a batch whose acknowledgement is lost (receiver
or broker stopped mid-way) is sent again from the same position, and the receiver drops the
repeats by position. The read and the cursor update are separate short transactions; no
database transaction stays open while the network is waited on. The cursor moves by
compare-and-set, so two broker replicas exporting to the same target never move it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.canonical import parse
from audit.records import Record
from audit.sealing import open_record
from audit.store import AuditLog
from broker.config import Settings, SiemTarget
from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.errors import AuditFailure
from broker.evidence.service import audit_log_of
from broker.siem.format import SiemEvent
from broker.siem.models import SiemCursor
from broker.siem.transport import Sender


async def cursor_of(db: AsyncSession, target: str) -> SiemCursor:
    """The target's cursor, created at position 0 the first time."""
    row = await db.get(SiemCursor, target)
    if row is not None:
        return row
    try:
        async with db.begin_nested():  # two replicas may create it at once
            row = SiemCursor(target=target, next_position=0, delivered=0, failures=0)
            db.add(row)
    except IntegrityError:
        row = await db.get(SiemCursor, target)
        if row is None:  # pragma: no cover - the racing insert must have committed
            raise
    return row


async def read_events(
    db: AsyncSession, log: AuditLog, after: int, limit: int, *, payloads: bool
) -> list[SiemEvent]:
    """Up to ``limit`` records from position ``after`` on, in log order, as events."""
    conn = await db.connection()
    records = await log.records(conn, after=after - 1, limit=limit)
    ciphers = await log.keyring.live(conn, {r.key_id for r in records}) if payloads else {}
    return [_event(log.log_id, r, ciphers, payloads=payloads) for r in records]


def _event(log_id: str, r: Record, ciphers: dict[str, AESGCM], *, payloads: bool) -> SiemEvent:
    payload = None
    erased = False
    if payloads:
        cipher = ciphers.get(r.key_id)
        if cipher is None:
            erased = True
        else:
            try:
                payload = parse(open_record(log_id, r, cipher))
            except InvalidTag as exc:
                raise AuditFailure(f"record {r.record_id} does not decrypt") from exc
    return SiemEvent(
        position=r.position,
        record_id=r.record_id,
        stream=r.stream,
        stream_seq=r.stream_seq,
        event_type=r.event_type,
        occurred_at=r.occurred_at,
        payload_size=r.payload_size,
        leaf_hash=r.leaf_hash,
        payload=payload,
        erased=erased,
    )


async def export_batch(
    maker: async_sessionmaker[AsyncSession], target: SiemTarget, sender: Sender, limit: int
) -> int:
    """Send the next batch after the target's cursor; returns how many were acknowledged."""
    async with transaction(maker) as db:
        start = (await cursor_of(db, target.name)).next_position
        events = await read_events(db, audit_log_of(db), start, limit, payloads=target.payloads)
    if not events:
        return 0
    await sender.send(events)  # raises when not acknowledged: the cursor stays
    end = events[-1].position + 1
    async with transaction(maker) as db:
        await db.execute(
            update(SiemCursor)
            .where(SiemCursor.target == target.name, SiemCursor.next_position == start)
            .values(
                next_position=end,
                delivered=SiemCursor.delivered + len(events),
                delivered_at=utcnow(),
                failures=0,
            )
        )
    return len(events)


async def record_failure(maker: async_sessionmaker[AsyncSession], target: str, error: str) -> int:
    """Note a failed delivery on the cursor (for ``siem status``); returns failures in a row."""
    async with transaction(maker) as db:
        row = await cursor_of(db, target)
        row.failures += 1
        row.last_error = error[:2000]
        row.last_error_at = utcnow()
        return row.failures


@dataclass(frozen=True)
class TargetStatus:
    name: str
    kind: str
    next_position: int
    log_size: int
    delivered: int
    delivered_at: datetime | None
    failures: int
    last_error: str | None
    last_error_at: datetime | None

    @property
    def lag(self) -> int:
        return max(0, self.log_size - self.next_position)


async def status(db: AsyncSession, settings: Settings) -> list[TargetStatus]:
    """Each configured target's cursor against the log's size (lag: records not yet taken)."""
    size = await audit_log_of(db).size(await db.connection())
    rows = {r.target: r for r in (await db.scalars(select(SiemCursor))).all()}
    out = []
    for target in settings.siem_targets:
        row = rows.get(target.name)
        out.append(
            TargetStatus(
                name=target.name,
                kind=target.kind,
                next_position=row.next_position if row else 0,
                log_size=size,
                delivered=row.delivered if row else 0,
                delivered_at=row.delivered_at if row else None,
                failures=row.failures if row else 0,
                last_error=row.last_error if row else None,
                last_error_at=row.last_error_at if row else None,
            )
        )
    return out
