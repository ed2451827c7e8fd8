"""Push, not poll: the gateway hears of every committed session move at once.

Every session move (the agent's signed consent, the web consent page, the deadline sweep, a
revoke, a new request) goes through ``broker.sessions.transitions.transition``; once the
transaction that made it commits, the session lifecycle (``broker.flows.lifecycle``, after
commit) calls :func:`wake_gateways`, which bumps each running gateway's
:class:`SessionSignals` once per commit. Waiters then re-read the database, so they never act
on a change that was rolled back.

The gateway's poller and the technician sockets that wait for consent wake on the bump.

Other replicas (docs/DEPLOY.md): on PostgreSQL every session move also sends
``NOTIFY supportbroker_sessions`` inside its transaction (:func:`notify_replicas`), which
PostgreSQL delivers only if and when that transaction commits; each gateway LISTENs on its
own connection (:func:`listen_for_changes`) and bumps its signals. The slow fallback period
(``signal_fallback_seconds``) still catches a notice lost while the listening connection
was being re-established (it bumps once on every reconnect as well).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from functools import partial
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "supportbroker_sessions"
# Names this process in its notices: its own commits already woke its gateways (after
# commit), so its listener skips them instead of waking everyone a second time.
ORIGIN = uuid.uuid4().hex
RELISTEN_SECONDS = 1.0
log = structlog.get_logger("broker.gateway")

_hubs: weakref.WeakSet[SessionSignals] = weakref.WeakSet()


class SessionSignals:
    """A change counter with waiters; ``bump`` is safe to call from any thread."""

    def __init__(self) -> None:
        self.version = 0
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def bump(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._bump)
        except RuntimeError:  # the gateway's loop is closed: nobody is waiting any more
            return

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_after(self, version: int, seconds: float) -> bool:
        """Until a change newer than ``version`` (True) or ``seconds`` pass (False)."""
        if self.version != version:
            return True
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)
        return self.version != version

    def attach(self) -> None:
        _hubs.add(self)

    def detach(self) -> None:
        _hubs.discard(self)


def wake_gateways() -> None:
    """A commit moved sessions: wake every running gateway of this process."""
    for hub in list(_hubs):
        hub.bump()


async def notify_replicas(db: AsyncSession) -> None:
    """Inside the moving transaction: PostgreSQL tells every listener once it commits."""
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(
            text("SELECT pg_notify(:channel, :origin)"), {"channel": CHANNEL, "origin": ORIGIN}
        )


def _set(event: asyncio.Event, *_: Any) -> None:
    event.set()


async def listen_for_changes(database_url: str, signals: SessionSignals) -> None:
    """LISTEN on a connection of its own (not the pool's) and bump ``signals`` per notice;
    reconnects after a drop, bumping once for whatever it may have missed meanwhile."""
    import asyncpg

    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)

    def heard(_conn: Any, _pid: int, _channel: str, origin: str) -> None:
        if origin != ORIGIN:
            signals.bump()

    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("gateway.listen_failed", error=str(exc)[:200])
            await asyncio.sleep(RELISTEN_SECONDS)
            continue
        lost = asyncio.Event()
        conn.add_termination_listener(partial(_set, lost))
        try:
            await conn.add_listener(CHANNEL, heard)
            signals.bump()
            await lost.wait()
            log.warning("gateway.listen_lost")
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("gateway.listen_failed", error=str(exc)[:200])
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        await asyncio.sleep(RELISTEN_SECONDS)
