"""Which broker process holds which agent, written in batches.

A broker restart makes thousands of agents dial in within seconds; one committed (fsynced)
transaction per connect queued them behind the database and its connection pool until
handshakes timed out and the agents were dropped, only to dial again. Presence is bookkeeping,
not evidence (the audit log records sessions, not links), so it is collected here and written
for many agents in one transaction shortly after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import Select, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.base import utcnow
from broker.gateway import service
from broker.gateway.models import AgentKey

log = structlog.get_logger("broker.gateway")

FLUSH_SECONDS = 0.2  # gathers a burst of connects into one commit


class Presence:
    def __init__(self, maker: async_sessionmaker[AsyncSession], node: str) -> None:
        self.maker = maker
        self.node = node  # the replica whose links these are
        self._pending: dict[str, tuple[str | None, str | None]] = {}
        self._wake = asyncio.Event()

    def mark(self, device_id: str, node: str | None, ip: str | None) -> None:
        """``node`` None: disconnected. A later mark for the device supersedes an earlier one."""
        self._pending[device_id] = (node, ip)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        self._wake.clear()
        batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            async with self.maker() as db, db.begin():
                await service.mark_presence(db, batch, self.node)
        except (SQLAlchemyError, OSError) as exc:
            # Not lost: merged back under any newer marks and written on the next round. A
            # connection that dies while being made (the route to the database came back
            # after a cut) surfaces as a bare ConnectionError: the writer must outlive it.
            log.warning("gateway.presence_failed", devices=len(batch), error=str(exc)[:200])
            self._pending = {**batch, **self._pending}
            self._wake.set()
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        with contextlib.suppress(SQLAlchemyError):
            await self.flush()


# --- what the inventory reads -------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A device's link as the gateway last wrote it: online now, and when last seen."""

    online: bool
    last_seen_at: datetime | None
    enrolled: bool


OFFLINE = Seen(online=False, last_seen_at=None, enrolled=False)


def online_ids() -> Select[str]:
    """The ids of devices whose agent holds a link now (a subquery for the device filter)."""
    return select(AgentKey.device_id).where(
        AgentKey.connected_node.is_not(None), AgentKey.revoked_at.is_(None)
    )


async def seen(db: AsyncSession, device_ids: Iterable[str]) -> dict[str, Seen]:
    """Presence of each of ``device_ids`` that has an agent key (others: :data:`OFFLINE`)."""
    ids = list(set(device_ids))
    if not ids:
        return {}
    rows = await db.scalars(select(AgentKey).where(AgentKey.device_id.in_(ids)))
    return {
        k.device_id: Seen(
            online=k.connected_node is not None and k.revoked_at is None,
            last_seen_at=k.last_seen_at,
            enrolled=k.revoked_at is None,
        )
        for k in rows
    }


async def revoke_key(db: AsyncSession, device_id: str) -> bool:
    """Revoke the device's agent key (a retired device's agent may not dial in again)."""
    result = await db.execute(
        update(AgentKey)
        .where(AgentKey.device_id == device_id, AgentKey.revoked_at.is_(None))
        .values(revoked_at=utcnow(), connected_node=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))
