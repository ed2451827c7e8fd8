"""Whole-log verification in the background (on a schedule) and on demand; the last result
is kept in ``audit_verifications`` so pages read it instead of verifying the log per view.

A run writes its row when it starts (committed at once, so "running" is visible), verifies
the whole log in a snapshot of its own connection (``audit.dbverify``: no lock held, the
broker keeps writing) and completes the row with the verdict. One run at a time per process;
a request while one runs returns the running one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.verify import VerifyReport
from broker.db.base import utcnow
from broker.evidence.models import AuditVerification
from broker.evidence.service import audit_log_of

log = structlog.get_logger("broker.evidence")


@dataclass
class Verifications:
    """The runs of one broker process (kept on ``app.state``)."""

    maker: async_sessionmaker[AsyncSession]
    processes: int = 1
    task: asyncio.Task[AuditVerification] | None = None

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(
        self, trigger: str, requested_by: str | None = None
    ) -> asyncio.Task[AuditVerification]:
        """Start a run in the background (or return the one running)."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(
                run(self.maker, trigger, requested_by, processes=self.processes),
                name="audit-verification",
            )
        return self.task

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def run(
    maker: async_sessionmaker[AsyncSession],
    trigger: str,
    requested_by: str | None = None,
    *,
    processes: int = 1,
) -> AuditVerification:
    """Verify the whole log now and record the outcome; returns the completed row."""
    async with maker() as db, db.begin():
        row = AuditVerification(trigger=trigger, requested_by=requested_by, started_at=utcnow())
        db.add(row)
    async with maker() as db:
        engine = db.bind
        audit_log = audit_log_of(db)
    async with engine.connect() as conn:  # type: ignore[union-attr]
        report = await audit_log.verify_log(conn, processes=processes, snapshot=True)
    async with maker() as db, db.begin():
        done = await db.get(AuditVerification, row.id)
        assert done is not None  # written above, never deleted
        _complete(done, report)
    log.info(
        "audit.verified",
        ok=report.ok,
        size=report.size,
        uncovered=report.uncovered,
        trigger=trigger,
    )
    return done


def _complete(row: AuditVerification, report: VerifyReport) -> None:
    row.finished_at = utcnow()
    row.ok = report.ok
    row.size = report.size
    row.covered = report.covered if report.ok else None
    row.verdict = report.verdict()
    row.position = report.position
    row.record_id = report.record_id


async def last_finished(db: AsyncSession) -> AuditVerification | None:
    """The most recent completed verification (None if none has finished yet)."""
    stmt = (
        select(AuditVerification)
        .where(AuditVerification.finished_at.is_not(None))
        .order_by(AuditVerification.started_at.desc())
        .limit(1)
    )
    return (await db.scalars(stmt)).first()


async def last_started(db: AsyncSession) -> AuditVerification | None:
    """The most recent verification, finished or still running."""
    stmt = select(AuditVerification).order_by(AuditVerification.started_at.desc()).limit(1)
    return (await db.scalars(stmt)).first()
