"""The SSH gateway agents dial into: ``listen_reverse`` (we are the SSH client on each link).

``start_gateway(app)`` starts it with the broker and returns the stop function. Each agent
connection is identified by the host key it proved in the SSH handshake; the first line on
its control channel is a hello (with a one-time token when enrolling). Which broker process
holds which agent is written to ``agent_keys.connected_node``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.recording import Begin
from audit.store import AuditLog
from broker.config import Settings
from broker.errors import BrokerError, PolicyDenied, ProviderError
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, record_event
from broker.gateway import keys, service
from broker.gateway.access import Tickets, Waiting
from broker.gateway.presence import Presence
from broker.gateway.recording import AuditRecorder, open_recorder
from broker.gateway.relay import ShellRelay
from broker.gateway.signals import SessionSignals
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord

log = structlog.get_logger("broker.gateway")

CONTROL = "supportbroker-control"
HELLO_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 10.0  # with 2 misses a silent agent is dropped within ~30 s
# A link without an open session is probed rarely: idle agents outnumber busy ones by far,
# and each probe is a round of Python work on both ends. The poller switches a link to the
# short interval as soon as one of its sessions opens (``AgentLink.watch``).
IDLE_KEEPALIVE_INTERVAL = 60.0
LOST_REASON = "agent connection lost"
GRANT_SECONDS = 10.0  # how long a socket waits for the agent to confirm a grant from elsewhere
CHUNK_SECONDS = 1.0
LINK_WINDOW = 8 << 20
LINK_MAX_PACKET = 128 << 10  # under asyncssh's 256 KiB receive limit on the agent's side
LINK_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)  # a quiet terminal's output is sealed within about this long


class AgentLink:
    """One connected agent: its SSH connection, control channel and open relays."""

    def __init__(self, gateway: Gateway, conn: asyncssh.SSHClientConnection) -> None:
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
        self.pushed: set[tuple[str, str]] = set()  # (session, state) already told to the agent
        self.relays: dict[str, ShellRelay] = {}
        self.ready = asyncio.Event()
        self.busy = False
        # Per session: resolved once the agent holds the grant (its signed approval, or its
        # "granted" reply to a grant from elsewhere), failed if it refused the grant.
        self._grants: dict[str, asyncio.Future[None]] = {}

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

    def watch(self, busy: bool) -> None:
        """Probe often while the device has an open session (a lost link fails it in 30 s)."""
        if busy != self.busy:
            self.busy = busy
            interval = KEEPALIVE_INTERVAL if busy else IDLE_KEEPALIVE_INTERVAL
            self.conn.set_keepalive(interval, 2)

    def send(self, msg: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(json.dumps(msg).encode() + b"\n")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        *,
        audit_log: AuditLog,
        recording_begin: Begin,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.audit_log = audit_log
        # Each recording chunk is sealed in its own transaction from here (a seam for tests).
        self.recording_begin = recording_begin
        self.chunk_seconds = CHUNK_SECONDS
        self.key = keys.load_or_create(settings)
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.links: dict[str, AgentLink] = {}
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self.tickets = Tickets()
        self.signals = SessionSignals()
        self.waiting = Waiting()  # technician sockets waiting for consent
        self.presence = Presence(maker)
        self.db_gate = asyncio.Semaphore(4)  # below the pool size: others keep a connection

    @property
    def fingerprint(self) -> str:
        return keys.fingerprint(self.key)

    async def start(self, host: str, port: int) -> None:
        self._acceptor = await asyncssh.listen_reverse(
            host,
            port,
            client_keys=[self.key],
            known_hosts=None,  # agents are identified after the handshake, by their key
            username="supportbroker",
            encoding=None,
            keepalive_interval=IDLE_KEEPALIVE_INTERVAL,
            keepalive_count_max=2,
            acceptor=self._accepted,
            agent_path=None,
            login_timeout=20,
            # Bulk forwards: per-packet Python work, not the cipher, bounds throughput, so
            # fewer, larger packets and a window that keeps the pipe full; AES-GCM (AES-NI,
            # one call per packet) before ChaCha20-Poly1305 (three cipher set-ups per packet).
            window=LINK_WINDOW,
            max_pktsize=LINK_MAX_PACKET,
            encryption_algs=LINK_CIPHERS,
        )
        self.port = self._acceptor.get_port()
        self.signals.attach()
        from broker.gateway.control import Poller

        self._spawn(Poller(self).run())
        self._spawn(self.presence.run())
        log.info("gateway.started", host=host, port=self.port, fingerprint=self.fingerprint)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _accepted(self, conn: asyncssh.SSHClientConnection) -> None:
        self._spawn(self._serve(conn))

    async def _serve(self, conn: asyncssh.SSHClientConnection) -> None:
        from broker.gateway.control import handle_link

        link = AgentLink(self, conn)
        try:
            await handle_link(link)
        except (asyncssh.Error, OSError, TimeoutError, ValueError, BrokerError) as exc:
            log.info("gateway.link_closed", device_id=link.device_id, why=str(exc)[:200])
        except SQLAlchemyError as exc:  # the database is overloaded or down: the agent redials
            log.warning("gateway.link_db_error", device_id=link.device_id, error=str(exc)[:200])
        finally:
            conn.close()
            try:
                await self._drop(link)
            except SQLAlchemyError:
                # Its sessions stay open until the deadline sweep: an operator must know.
                log.error("gateway.drop_failed", device_id=link.device_id, exc_info=True)

    async def granted(self, session_id: str, device_id: str) -> None:
        """Until the device's agent on this process holds the grant for ``session_id``."""
        link = self.links.get(device_id)
        if link is None:
            raise ProviderError("the device's agent is not connected to this broker")
        await link.granted(session_id)

    async def _drop(self, link: AgentLink) -> None:
        link.lost()
        if link.device_id and self.links.get(link.device_id) is link:
            del self.links[link.device_id]
        for relay in list(link.relays.values()):
            await relay.close(LOST_REASON)
        if not link.device_id:
            return
        if link.device_id not in self.links:  # not replaced by a newer link of the device
            self.presence.mark(link.device_id, None, link.ip)
        if not link.tracked:
            return
        async with self.maker() as db, db.begin():
            for session_id in sorted(link.tracked):
                with contextlib.suppress(BrokerError):
                    if await service.fail_lost(db, session_id, LOST_REASON):
                        log.warning("gateway.session_failed", session_id=session_id)

    async def open_recorder(
        self, record: SessionRecord, size: tuple[int, int] = (80, 24)
    ) -> AuditRecorder:
        return await open_recorder(
            self.audit_log,
            self.recording_begin,
            record,
            chunk_seconds=self.chunk_seconds,
            size=size,
        )

    async def fail_session(self, session_id: str, why: str, recording_id: str) -> None:
        """Fail-closed: the recording could not be sealed, so the session must not go on.

        The gap event and the ``failed`` transition commit together; a session that already
        ended (revoked while the last chunk failed) keeps its state and still gets the gap.
        """
        async with self.maker() as db, db.begin():
            record, _ = await sessions.load(db, session_id)
            await record_event(
                db,
                EventType.recording_gap,
                ticket=record.ticket.ref,
                actor=SYSTEM_ACTOR,
                data={"session_id": session_id, "recording_id": recording_id, "why": why},
            )
            await service.fail_lost(db, session_id, why)
        log.warning("gateway.session_failed_closed", session_id=session_id)

    async def stop(self) -> None:
        self.signals.detach()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        for link in list(self.links.values()):
            link.conn.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.presence.close()


async def start_gateway(app: Any) -> Callable[[], Awaitable[None]]:
    """Start the SSH gateway for ``app`` (called from the lifespan); returns ``stop``."""
    settings: Settings = app.state.settings
    gateway = Gateway(
        settings,
        app.state.sessionmaker,
        audit_log=app.state.audit_log,
        recording_begin=app.state.engine.begin,
    )
    await gateway.start(settings.gateway_host, settings.gateway_port)
    app.state.gateway = gateway

    async def _stop() -> None:
        await gateway.stop()

    return _stop
