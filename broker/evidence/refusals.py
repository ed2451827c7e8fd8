"""Refusals during a lockout or back-off, tallied per source and minute, sealed in aggregate.

A 429 tells an attacker nothing and costs them nothing, so one audit record per refusal would
let them flood the log at line rate. Each refusal instead adds one to its source's tally
for the current minute (a row, shared by replicas); when that minute is over the tally
becomes one ``security.refused`` record with the count: at the next refusal from the same
source, or from the background loop (:func:`record_finished`), whichever comes first. The
log thus grows by at most one record per source and minute, however hard the source pushes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event

# What was refused: the kinds of refusal that are tallied.
LOGIN = "login"
CONSENT_CODE = "consent_code"


class RefusalTally(Base):
    """Refusals of one kind from one source within ``minute`` (not yet sealed)."""

    __tablename__ = "refusal_tallies"

    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


async def tally(db: AsyncSession, kind: str, source: str, now: datetime) -> None:
    """Count one refusal; seal the source's previous minute if it is over."""
    source = source[:64]
    minute = minute_of(now)
    row = await _locked(db, kind, source)
    if row is None:
        try:
            # A savepoint: two first refusals from one source race on the primary key.
            async with db.begin_nested():
                db.add(RefusalTally(kind=kind, source=source, minute=minute, count=1))
            return
        except IntegrityError:
            row = await _locked(db, kind, source)
            if row is None:  # pragma: no cover - the racing insert must have committed
                raise
    if row.minute == minute:
        row.count += 1
    else:
        await _seal(db, row)
        row.minute, row.count = minute, 1
    await db.flush()


async def record_finished(db: AsyncSession, now: datetime) -> int:
    """Seal every tally whose minute is over (the background loop's job). Returns how many."""
    stmt = (
        select(RefusalTally)
        .where(RefusalTally.minute < minute_of(now))
        .order_by(RefusalTally.minute)
        .limit(500)
        .with_for_update()
    )
    rows = list(await db.scalars(stmt))
    for row in rows:
        await _seal(db, row)
        await db.execute(
            delete(RefusalTally).where(
                RefusalTally.kind == row.kind,
                RefusalTally.source == row.source,
                RefusalTally.minute == row.minute,
            )
        )
    return len(rows)


async def _locked(db: AsyncSession, kind: str, source: str) -> RefusalTally | None:
    stmt = (
        select(RefusalTally)
        .where(RefusalTally.kind == kind, RefusalTally.source == source)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return await db.scalar(stmt)


async def _seal(db: AsyncSession, row: RefusalTally) -> None:
    await record_event(
        db,
        EventType.security_refused,
        ticket=None,
        actor=Actor(kind="anonymous", ip=row.source),
        data={
            "kind": row.kind,
            "source": row.source,
            "minute": row.minute.isoformat(),
            "count": row.count,
        },
    )
