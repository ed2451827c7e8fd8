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

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.gateway import service

log = structlog.get_logger("broker.gateway")

FLUSH_SECONDS = 0.2  # gathers a burst of connects into one commit


class Presence:
    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self.maker = maker
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
                await service.mark_presence(db, batch)
        except SQLAlchemyError as exc:
            # Not lost: merged back under any newer marks and written on the next round.
            log.warning("gateway.presence_failed", devices=len(batch), error=str(exc)[:200])
            self._pending = {**batch, **self._pending}
            self._wake.set()
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        with contextlib.suppress(SQLAlchemyError):
            await self.flush()
