"""Push, not poll: the gateway hears of every committed session move at once.

Every session move (the agent's signed consent, the web consent page, the deadline sweep, a
revoke, a new request) goes through ``broker.sessions.transitions.transition``; once the
transaction that made it commits, the session lifecycle (``broker.flows.lifecycle``, after
commit) calls :func:`wake_gateways`, which bumps each running gateway's
:class:`SessionSignals` once per commit. Waiters then re-read the database, so they never act
on a change that was rolled back.

The gateway's poller and the technician sockets that wait for consent wake on the bump; a
slow fallback period still catches changes committed by another broker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

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
