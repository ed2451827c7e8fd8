"""Taking over from a replica that stopped: its running sessions fail, their recordings end
in a gap record.

A session is served by the replica whose agent link holds its grant (``sessions.served_by``,
claimed by that replica's gateway). When the replica is killed, its agents redial another
replica within seconds, but what it was recording is cut off mid-chunk and nobody enforces
the session any more. The holder of the background lease finds such sessions once the dead
replica's heartbeat has run out (served by a replica that is no longer alive) and, for each,
in one transaction:

1. claims it (compare-and-set ``served_by`` from the dead replica to itself), so two replicas
   taking over at once never seal anything twice;
2. seals ``recording.gap`` for every recording of the session that has no end record: the
   recording stopped with that replica, after the last chunk it sealed (chunks are sealed as
   they are recorded, so everything up to that chunk is in the ticket's chain);
3. fails the session through the same service call as a lost agent link on one broker
   (``broker.gateway.service.fail_lost``), the reason naming the dead replica.

A replica restarted under the same id (``SUPPORTBROKER_REPLICA_ID``) is alive again as far as
heartbeats go, so at start-up it takes over its own earlier life's sessions: no link of this
process can hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.evidence.service import audit_log_of
from broker.gateway import service as gateway
from broker.gateway.recording import list_recordings
from broker.replicas.models import Replica
from broker.sessions import service as sessions
from broker.sessions.states import SessionState

log = structlog.get_logger("broker.replicas")
RUNNING = frozenset({SessionState.approved, SessionState.active})


def stopped(replica: str) -> str:
    """The failed session's reason: which replica stopped."""
    return f"the broker replica serving it ({replica}) stopped: its heartbeat ran out"


async def orphans(
    db: AsyncSession, lease: timedelta, stale: Collection[str] = ()
) -> list[tuple[str, str]]:
    """(session id, replica) of running sessions served by a replica that is not alive; with
    ``stale``, of those served by one of them (this process's own id at start-up)."""
    running = await sessions.served_running(db)
    if stale:
        return [(sid, by) for sid, by in running if by in stale]
    since = utcnow() - lease
    alive = set(await db.scalars(select(Replica.id).where(Replica.heartbeat_at > since)))
    return [(sid, by) for sid, by in running if by not in alive]


async def take_over_session(
    maker: async_sessionmaker[AsyncSession], session_id: str, dead: str, taker: str
) -> bool:
    """Close ``session_id``'s open recordings with a gap record and fail it; False when
    another replica took it over first or it had already ended."""
    why = stopped(dead)
    async with transaction(maker) as db:
        if not await sessions.serve_from(db, session_id, taker, instead_of=dead):
            return False
        record, _ = await sessions.load(db, session_id)
        if record.session.state not in RUNNING:  # it ended meanwhile (its time ran out)
            return False
        conn = await db.connection()
        found = await list_recordings(audit_log_of(db), conn, record.ticket.ref, session_id)
        for rec in found:
            if rec.ended_at is not None:
                continue
            await gateway.record_gap(
                db,
                record,
                rec.recording_id,
                f"the recording stopped with the broker replica {dead}, "
                + (f"after chunk {rec.chunks - 1}" if rec.chunks else "before its first chunk"),
                replica=dead,
                chunks=rec.chunks,
                last_chunk=rec.chunks - 1 if rec.chunks else None,
            )
        failed = await gateway.fail_lost(db, session_id, why)
    log.warning(
        "replicas.session_taken_over",
        session_id=session_id,
        replica=dead,
        by=taker,
        failed=failed,
        recordings=[r.recording_id for r in found if r.ended_at is None],
    )
    return failed


async def take_over(
    maker: async_sessionmaker[AsyncSession],
    taker: str,
    lease: timedelta,
    stale: Collection[str] = (),
) -> int:
    """Fail every running session of a replica that stopped; the number failed."""
    async with maker() as db:
        found = await orphans(db, lease, stale)
        await db.rollback()
    failed = 0
    for session_id, dead in found:
        failed += await take_over_session(maker, session_id, dead, taker)
    return failed


class Takeover:
    """The background lease holder's takeover, in a task of its own: reading a long
    recording's chunks back must not hold up the heartbeat it is started from."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], taker: str) -> None:
        self.maker = maker
        self.taker = taker
        self._task: asyncio.Task[None] | None = None

    def poke(self, lease: timedelta) -> None:
        """Look for a stopped replica's sessions now, unless a look is still under way."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(lease), name="replica-takeover")

    async def _run(self, lease: timedelta) -> None:
        try:
            await take_over(self.maker, self.taker, lease)
        except Exception as exc:  # the database is away: the next heartbeat looks again
            log.warning("replicas.takeover_failed", replica=self.taker, error=str(exc)[:200])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
