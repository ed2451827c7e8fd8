"""Push, not poll: the gateway hears of every committed change to a remote session at once.

Every session move in the broker (the agent's signed consent, the web consent page, the
deadline sweep, a revoke, a new request) ends in a commit of a transaction that wrote the
``sessions`` table, through :func:`broker.sessions.transitions.transition` or an insert. A
SQLAlchemy listener notes such writes (``do_orm_execute`` for the compare-and-set ``UPDATE``,
``after_flush`` for new rows) and, only once the transaction *commits*, bumps each running
gateway's :class:`SessionSignals`. Waiters then re-read the database, so they never act on a
change that was rolled back, and nothing in ``broker/sessions`` has to know about the gateway.

The gateway's poller and the technician sockets that wait for consent wake on the bump; a
slow fallback period still catches changes committed by another broker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from broker.sessions.models import RemoteSession

_FLAG = "supportbroker.sessions_written"
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
        _install()
        _hubs.add(self)

    def detach(self) -> None:
        _hubs.discard(self)


def _orm_execute(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_insert) and any(
        m.class_ is RemoteSession for m in state.all_mappers
    ):
        state.session.info[_FLAG] = True


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    if any(isinstance(obj, RemoteSession) for obj in (*session.new, *session.dirty)):
        session.info[_FLAG] = True


def _after_commit(session: Session) -> None:
    if session.info.pop(_FLAG, False):
        for hub in list(_hubs):
            hub.bump()


def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    # Only the outermost rollback drops the note: a savepoint rolled back inside a transaction
    # that later commits must still wake the waiters (a spare wake-up costs one re-read).
    if previous.parent is None:
        session.info.pop(_FLAG, None)


def _install() -> None:
    """Listen on every ORM session of the process, once (idempotent)."""
    if event.contains(Session, "after_commit", _after_commit):
        return
    event.listen(Session, "do_orm_execute", _orm_execute)
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_soft_rollback", _after_rollback)
