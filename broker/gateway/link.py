"""One connected agent as the gateway sees it: its SSH link, control channel, grants, relays.

Split from the server so that the control channel (:mod:`broker.gateway.control`) and the
server that accepts links (:mod:`broker.gateway.server`) both build on it without importing
each other; :class:`Hub` is what a link needs of the gateway that accepted it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import asyncssh
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.config import Settings
from broker.errors import PolicyDenied, ProviderError
from broker.gateway import keys
from broker.gateway.access import Waiting
from broker.gateway.presence import Presence
from broker.gateway.relay import ShellRelay
from broker.gateway.rfb_relay import DesktopViewers
from broker.gateway.signals import SessionSignals

CONTROL = "supportbroker-control"
HELLO_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 10.0  # with 2 misses a silent agent is dropped within ~30 s
# A link without an open session is probed rarely: idle agents outnumber busy ones by far,
# and each probe is a round of Python work on both ends. The poller switches a link to the
# short interval as soon as one of its sessions opens (``AgentLink.watch``).
IDLE_KEEPALIVE_INTERVAL = 60.0
GRANT_SECONDS = 10.0  # how long a socket waits for the agent to confirm a grant from elsewhere


class Hub(Protocol):
    """What links and their control channels use of the gateway that accepted them."""

    maker: async_sessionmaker[AsyncSession]
    settings: Settings
    node: str
    links: dict[str, AgentLink]
    presence: Presence
    signals: SessionSignals
    waiting: Waiting
    db_gate: asyncio.Semaphore


class AgentLink:
    """One connected agent: its SSH connection, control channel and open relays."""

    def __init__(self, gateway: Hub, conn: asyncssh.SSHClientConnection) -> None:
        self.gateway = gateway
        self.conn = conn
        host_key = conn.get_server_host_key()
        assert host_key is not None  # set once the handshake completed
        self.fingerprint = keys.fingerprint(host_key)
        self.public_key = host_key.export_public_key("openssh").decode().strip()
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.ip = str(peer[0])
        self.device_id = ""
        self.record_input = False
        self.writer: asyncssh.SSHWriter[bytes] | None = None
        self.tracked: set[str] = set()  # sessions the agent holds a grant for
        # Sessions whose consent request the agent is showing and has not answered: when
        # they are settled elsewhere (the web, the time-out) the agent is told, once.
        self.prompted: set[str] = set()
        self.pushed: set[tuple[str, str]] = set()  # (session, state) already told to the agent
        self.relays: dict[str, ShellRelay] = {}
        self.desktops = DesktopViewers()  # every viewer's own screen connection
        self.ready = asyncio.Event()
        self.busy = False
        # Per session: resolved once the agent holds the grant (its signed approval, or its
        # "granted" reply to a grant from elsewhere), failed if it refused the grant.
        self._grants: dict[str, asyncio.Future[None]] = {}
        # The device's own hash of each file the broker moves, awaited by the transfer (see
        # broker.gateway.files), by (session, direction, file name on the device).
        self._reports: dict[tuple[str, str, str], asyncio.Future[dict[str, Any]]] = {}

    def expect_report(self, key: tuple[str, str, str]) -> asyncio.Future[dict[str, Any]]:
        """A future for the agent's report of the file ``key`` names, once it is closed."""
        found = asyncio.get_running_loop().create_future()
        self._reports[key] = found
        return found

    def unexpect(self, key: tuple[str, str, str]) -> None:
        found = self._reports.pop(key, None)
        if found is not None and not found.done():
            found.cancel()

    def take_report(self, msg: dict[str, Any]) -> bool:
        """A ``file_transfer`` report: True if a broker transfer awaited it (it seals it)."""
        key = (str(msg.get("session_id")), str(msg.get("direction")), str(msg.get("name")))
        found = self._reports.pop(key, None)
        if found is None or found.done():
            return False
        found.set_result(msg)
        return True

    def _grant(self, session_id: str) -> asyncio.Future[None]:
        if session_id not in self._grants:
            self._grants[session_id] = asyncio.get_running_loop().create_future()
        return self._grants[session_id]

    def confirm(self, session_id: str, refusal: str | None = None) -> None:
        """The agent holds the grant for ``session_id`` (or refused it: ``refusal``)."""
        found = self._grant(session_id)
        if found.done():
            return
        if refusal is None:
            found.set_result(None)
        else:
            found.set_exception(PolicyDenied(refusal))
            found.exception()  # retrieved: a socket awaiting it still gets it

    def forget(self, session_id: str, why: str = "the session ended") -> None:
        """The agent dropped the grant (the session ended)."""
        found = self._grants.pop(session_id, None)
        if found is not None and not found.done():
            found.set_exception(ProviderError(why))
            found.exception()

    async def granted(self, session_id: str) -> None:
        """Until the agent holds the grant: a channel opened before would be refused."""
        try:
            await asyncio.wait_for(asyncio.shield(self._grant(session_id)), GRANT_SECONDS)
        except TimeoutError as exc:
            raise ProviderError(
                f"the device's agent did not confirm the approval of {session_id} in time"
            ) from exc

    def lost(self) -> None:
        """The connection is gone: nobody waits for its agent any more."""
        for session_id in list(self._grants):
            self.forget(session_id, "the device's agent disconnected")
        for found in self._reports.values():
            if not found.done():
                found.set_exception(ProviderError("the device's agent disconnected"))
                found.exception()
        self._reports.clear()

    def watch(self, busy: bool) -> None:
        """Probe often while the device has an open session (a lost link fails it in 30 s)."""
        if busy != self.busy:
            self.busy = busy
            interval = KEEPALIVE_INTERVAL if busy else IDLE_KEEPALIVE_INTERVAL
            self.conn.set_keepalive(interval, 2)

    def send(self, msg: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(json.dumps(msg).encode() + b"\n")

    def tell_viewer(self, session_id: str, name: str, mode: str, *, present: bool) -> None:
        """One-way: an expert joined or a supervisor watches (or left), so the person at the
        device sees who is connected. The technician's own channel the agent sees itself."""
        if mode != "control":
            self.send(
                {
                    "type": "viewer",
                    "session_id": session_id,
                    "name": name,
                    "mode": mode,
                    "present": present,
                }
            )
