"""The SSH gateway agents dial into: ``listen_reverse`` (we are the SSH client on each link).

``start_gateway(app)`` starts it with the broker and returns the stop function. Each agent
connection is identified by the host key it proved in the SSH handshake; the first line on
its control channel is a hello (with a one-time token when enrolling). Which broker process
holds which agent is written to ``agent_keys.connected_node``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncssh
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.recording import Begin
from audit.store import AuditLog
from broker.config import Settings
from broker.db.aftercommit import transaction
from broker.errors import BrokerError, ProviderError
from broker.gateway import files, keys, service
from broker.gateway.access import Tickets, Waiting
from broker.gateway.attendance import Attendance
from broker.gateway.control import Poller, handle_link
from broker.gateway.desktop_recording import DesktopRecorder
from broker.gateway.link import IDLE_KEEPALIVE_INTERVAL, AgentLink
from broker.gateway.presence import Presence
from broker.gateway.recording import AuditRecorder, open_recorder
from broker.gateway.rfb_relay import DesktopTap
from broker.gateway.signals import SessionSignals, listen_for_changes
from broker.replicas.peering import Peering
from broker.replicas.service import holder_of
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord

log = structlog.get_logger("broker.gateway")

LOST_REASON = "agent connection lost"
CHUNK_SECONDS = 1.0
LINK_WINDOW = 8 << 20
LINK_MAX_PACKET = 128 << 10  # under asyncssh's 256 KiB receive limit on the agent's side
LINK_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)  # a quiet terminal's output is sealed within about this long


class Gateway:
    def __init__(
        self,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        *,
        audit_log: AuditLog,
        recording_begin: Begin,
        node: str | None = None,
        peering_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.audit_log = audit_log
        # Each recording chunk is sealed in its own transaction from here (a seam for tests).
        self.recording_begin = recording_begin
        self.chunk_seconds = CHUNK_SECONDS
        self.key = keys.load_or_create(settings)
        # The replica id (broker.replicas): agent links name it in agent_keys.connected_node.
        self.node = node or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.links: dict[str, AgentLink] = {}
        # Sockets for agents held by another replica are relayed there (the replica's
        # published key, broker.replicas.service.Membership, authenticates the channel).
        self.peering = Peering(settings, maker, self.node, peering_key)
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self.tickets = Tickets()
        self.signals = SessionSignals()
        self.waiting = Waiting()  # technician sockets waiting for consent
        self.transfers = files.Outcomes()  # downloads' sealed outcomes, asked for after
        self.presence = Presence(maker, self.node)
        self.attendance = Attendance()  # who is on a session's terminal or screen
        self.db_gate = asyncio.Semaphore(4)  # below the pool size: others keep a connection
        # Listeners on the technician's screen connection (the session's record): its
        # recorder (docs/DESKTOP.md, "Recording").
        self.desktop_taps: Callable[[SessionRecord], Sequence[DesktopTap]] = self._recorders

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
        if self.settings.database_url.startswith("postgresql"):
            # Other replicas' commits reach this one's waiters (broker.gateway.signals).
            self._spawn(listen_for_changes(self.settings.database_url, self.signals))
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
            except (SQLAlchemyError, OSError):
                # Its sessions stay open until the deadline sweep: an operator must know.
                log.error("gateway.drop_failed", device_id=link.device_id, exc_info=True)

    async def granted(self, session_id: str, device_id: str) -> None:
        """Until the device's agent on this process holds the grant for ``session_id``."""
        link = self.links.get(device_id)
        if link is None:
            async with self.maker() as db:
                raise await self.absent(db, device_id)
        await link.granted(session_id)

    async def absent(self, db: AsyncSession, device_id: str) -> ProviderError:
        """Why a technician's socket or file transfer for ``device_id`` cannot be served
        here: the agent is not connected at all, or it is held by another live replica (both
        are relayed there before they get this far, broker.replicas.peering: this is the
        rare race of an agent that moved meanwhile)."""
        lease = timedelta(seconds=self.settings.replica_lease_seconds)
        holder = await holder_of(db, device_id, lease)
        if holder is not None and holder != self.node:
            return ProviderError(
                f"the device's agent is connected to another broker replica ({holder}), "
                f"not to this one ({self.node}); connect through that replica"
            )
        return ProviderError("the device's agent is not connected to this broker")

    def remark_links(self) -> None:
        """Write every agent link this process holds again (the replica was taken for dead
        and its links cleared while its agents stayed connected)."""
        for device_id, link in self.links.items():
            self.presence.mark(device_id, self.node, link.ip)

    async def _drop(self, link: AgentLink) -> None:
        link.lost()
        if link.device_id and self.links.get(link.device_id) is link:
            del self.links[link.device_id]
        link.desktops.close_all(LOST_REASON)
        for relay in list(link.relays.values()):
            await relay.close(LOST_REASON)
        if not link.device_id:
            return
        if link.device_id not in self.links:  # not replaced by a newer link of the device
            self.presence.mark(link.device_id, None, link.ip)
        if not link.tracked:
            return
        async with transaction(self.maker) as db:
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

    def _recorders(self, record: SessionRecord) -> Sequence[DesktopTap]:
        link = self.links.get(record.device.id)
        session_id = record.session.id

        async def failed(why: str, recording_id: str) -> None:
            try:
                await self.fail_session(session_id, why, recording_id)
            finally:  # the other viewers of an unrecorded session go too
                if link is not None:
                    link.desktops.close(session_id, why)

        recorder = DesktopRecorder(
            self.audit_log,
            self.recording_begin,
            record,
            chunk_seconds=self.chunk_seconds,
            record_input=link.record_input if link is not None else False,
            on_failure=failed,
        )
        return (recorder,)

    async def fail_session(self, session_id: str, why: str, recording_id: str) -> None:
        """Fail-closed: the recording could not be sealed, so the session must not go on.

        The gap event and the ``failed`` transition commit together; a session that already
        ended (revoked while the last chunk failed) keeps its state and still gets the gap.
        """
        async with transaction(self.maker) as db:
            record, _ = await sessions.load(db, session_id)
            await service.record_gap(db, record, recording_id, why)
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
    replica = getattr(app.state, "replica", None)
    gateway = Gateway(
        settings,
        app.state.sessionmaker,
        audit_log=app.state.audit_log,
        recording_begin=app.state.engine.begin,
        node=replica.id if replica is not None else None,
        peering_key=replica.peering_key if replica is not None else None,
    )
    await gateway.start(settings.gateway_host, settings.gateway_port)
    app.state.gateway = gateway
    replica = getattr(app.state, "replica", None)
    if replica is not None:
        replica.on_revived = gateway.remark_links

    async def _stop() -> None:
        await gateway.stop()

    return _stop
