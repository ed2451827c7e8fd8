"""One service made of replicas: its sealed identity, heartbeats and leases.

Identity: the first replica to start on a database writes the fingerprints of its KEKs, its
checkpoint signing key and its gateway SSH key to ``sealed_keys``; every later start compares
and refuses on a difference (a replica with its own ``./var/keys`` would seal records the
others cannot open, sign checkpoints nobody pinned and present agents another host key).

Presence: each replica upserts its row every ``replica_heartbeat_seconds``, with the public
half of the peering key it made at start (broker.replicas.peering). An agent link
(``agent_keys.connected_node``) names its replica and counts only while that replica's
heartbeat is younger than ``replica_lease_seconds``; the lease holder clears the links of
replicas found dead.

Leases: one row per kind of background work, taken by compare-and-set (an UPDATE that only
matches when the lease is ours or has run out, or the INSERT of a new row), so at most one
replica holds it at any moment, and a dead holder's lease is taken over once it runs out.
Replicas' clocks are assumed to agree to well under the lease (NTP).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import delete, select, true, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.store import AuditLog
from broker.config import Settings
from broker.db.base import utcnow
from broker.errors import IdentityMismatch
from broker.gateway import keys as gateway_keys
from broker.gateway.models import AgentKey
from broker.replicas.models import Lease, Replica, SealedKey
from broker.replicas.takeover import Takeover, take_over

log = structlog.get_logger("broker.replicas")

BACKGROUND = "background"  # the one lease the background jobs run under (broker.tasks)


def public_text(key: Ed25519PrivateKey) -> str:
    """The public half of a peering key as ``replicas.peering_key`` stores it."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


def replica_id(settings: Settings) -> str:
    return settings.replica_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- identity -------------------------------------------------------------------------------


def fingerprints(settings: Settings, audit_log: AuditLog) -> dict[str, str]:
    """What this replica holds: each KEK, the checkpoint key, the gateway's SSH host key."""
    found: dict[str, str] = {}
    kek_fingerprints = getattr(audit_log.keys, "fingerprints", None)
    if callable(kek_fingerprints):  # a file of KEKs; Vault transit keys never leave Vault
        found.update({f"kek:{k}": v for k, v in kek_fingerprints().items()})
    found["checkpoint-key"] = audit_log.signer.verifier.fingerprint
    found["ssh-host-key"] = gateway_keys.fingerprint(gateway_keys.load_or_create(settings))
    return found


async def check_identity(db: AsyncSession, held: dict[str, str]) -> list[str]:
    """Seal what is not sealed yet; raise :class:`IdentityMismatch` on any difference.
    Returns the names sealed now (empty on every start after the first)."""
    sealed = {k.name: k.fingerprint for k in await db.scalars(select(SealedKey))}
    differs = sorted(n for n, fp in held.items() if n in sealed and sealed[n] != fp)
    if differs:
        raise IdentityMismatch(
            "this replica's keys differ from the ones the database was sealed with: "
            + ", ".join(f"{n} is {held[n]}, sealed {sealed[n]}" for n in differs)
            + ". Every replica must use the same key files (docs/DEPLOY.md)."
        )
    # A KEK file that lacks every sealed KEK is another service's file, not a rotation.
    sealed_keks = {n for n in sealed if n.startswith("kek:")}
    held_keks = {n for n in held if n.startswith("kek:")}
    if sealed_keks and held_keks and not sealed_keks & held_keks:
        raise IdentityMismatch(
            f"this replica's key-encryption keys ({', '.join(sorted(held_keks))}) share none "
            f"with those the database was sealed with ({', '.join(sorted(sealed_keks))}). "
            "Every replica must use the same key files (docs/DEPLOY.md)."
        )
    new = sorted(n for n in held if n not in sealed)
    now = utcnow()
    for name in new:  # a rotated-in KEK is sealed when first seen
        db.add(SealedKey(name=name, fingerprint=held[name], sealed_at=now))
    await db.flush()
    return new


# --- presence -------------------------------------------------------------------------------


async def heartbeat(
    db: AsyncSession, rid: str, address: str, started_at: datetime, peering_key: str | None = None
) -> bool:
    """Upsert this replica's row; ``peering_key`` is the public half of its peering key
    (broker.replicas.peering), which the other replicas check its grants and proofs with.
    True when the row had to be made: a first start, or a replica found dead meanwhile."""
    now = utcnow()
    result = await db.execute(
        update(Replica)
        .where(Replica.id == rid)
        .values(heartbeat_at=now, address=address, peering_key=peering_key)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        db.add(
            Replica(
                id=rid,
                address=address,
                peering_key=peering_key,
                started_at=started_at,
                heartbeat_at=now,
            )
        )
        return True
    return False


async def alive(db: AsyncSession, lease: timedelta) -> dict[str, Replica]:
    """The replicas whose heartbeat is younger than ``lease``."""
    rows = await db.scalars(select(Replica).where(Replica.heartbeat_at > utcnow() - lease))
    return {r.id: r for r in rows}


async def holder_of(db: AsyncSession, device_id: str, lease: timedelta) -> str | None:
    """The live replica holding ``device_id``'s agent, if any."""
    return await db.scalar(
        select(AgentKey.connected_node)
        .join(Replica, Replica.id == AgentKey.connected_node)
        .where(
            AgentKey.device_id == device_id,
            AgentKey.revoked_at.is_(None),
            Replica.heartbeat_at > utcnow() - lease,
        )
    )


async def expire_dead(db: AsyncSession, lease: timedelta) -> int:
    """Clear the agent links of replicas whose heartbeat ran out, and forget those replicas.
    Run by the background lease's holder; returns the number of links cleared."""
    dead = list(
        await db.scalars(select(Replica.id).where(Replica.heartbeat_at <= utcnow() - lease))
    )
    if not dead:
        return 0
    result = await db.execute(
        update(AgentKey)
        .where(AgentKey.connected_node.in_(dead))
        .values(connected_node=None)
        .execution_options(synchronize_session=False)
    )
    await db.execute(delete(Replica).where(Replica.id.in_(dead)))
    cleared = int(getattr(result, "rowcount", 0) or 0)
    log.warning("replicas.expired", replicas=dead, links=cleared)
    return cleared


# --- leases ---------------------------------------------------------------------------------


async def take_lease(
    maker: async_sessionmaker[AsyncSession],
    name: str,
    holder: str,
    seconds: float,
    *,
    force: bool = False,
) -> bool:
    """Take or renew ``name`` for ``seconds``; False if another live holder has it
    (``force``: take it from any holder)."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    free = (Lease.holder == holder) | (Lease.expires_at <= now)
    async with maker() as db, db.begin():
        result = await db.execute(
            update(Lease)
            .where(Lease.name == name, true() if force else free)
            .values(holder=holder, expires_at=until)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0):
            return True
        if await db.scalar(select(Lease.name).where(Lease.name == name)) is not None:
            return False
    try:  # nobody ever held it: the first INSERT wins, the others hit the primary key
        async with maker() as db, db.begin():
            db.add(Lease(name=name, holder=holder, expires_at=until))
    except IntegrityError:
        return False
    return True


async def release_lease(maker: async_sessionmaker[AsyncSession], name: str, holder: str) -> None:
    async with maker() as db, db.begin():
        await db.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


class Membership:
    """This replica: its heartbeat and whether it holds the background lease.

    ``leading`` is checked before each background job; the lease is renewed every heartbeat
    and outlives it, so a holder that keeps beating keeps it, and one that stops (killed,
    cut off from the database) loses it within ``replica_lease_seconds``.
    """

    def __init__(self, settings: Settings, maker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.maker = maker
        self.id = replica_id(settings)
        self.address = settings.replica_address or settings.base_url
        self.started_at = utcnow()
        # Made anew at every start, kept in memory only: its public half is published with
        # each heartbeat; the replica-to-replica channel is authenticated with it.
        self.peering_key = Ed25519PrivateKey.generate()
        # Replicas share a PostgreSQL database; a SQLite file has one broker process, so a
        # lease left by a killed predecessor must not keep the restarted one from its jobs
        # (its final checkpoint at shutdown included) until the lease runs out.
        self.alone = settings.database_url.startswith("sqlite")
        self.leading = False
        self._lease_until = 0.0
        self._task: asyncio.Task[None] | None = None
        # A stopped replica's running sessions: failed, their recordings closed (takeover.py).
        self.takeover = Takeover(maker, self.id)
        # Called when this replica was taken for dead and comes back (the gateway writes its
        # agent links again); set by broker.gateway.server.start_gateway.
        self.on_revived: Callable[[], None] | None = None
        self._beaten = False

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.replica_lease_seconds)

    def holds_background(self) -> bool:
        # Stop acting as soon as our own view of the lease runs out, even before a renewal
        # attempt fails (a replica cut off from the database must not go on).
        loop = asyncio.get_running_loop()
        return self.leading and loop.time() < self._lease_until

    async def beat(self) -> None:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        async with self.maker() as db, db.begin():
            remade = await heartbeat(
                db, self.id, self.address, self.started_at, public_text(self.peering_key)
            )
        if remade and self._beaten:
            # Our heartbeat was late past the lease (a stalled process, a slow database) and
            # the lease holder took us for dead: it cleared our agents' links, which are
            # written only when an agent connects. The agents are still ours: write them again.
            log.warning("replicas.found_dead_while_alive", replica=self.id)
            if self.on_revived is not None:
                self.on_revived()
        self._beaten = True
        seconds = self.settings.replica_lease_seconds
        was = self.leading
        self.leading = await take_lease(self.maker, BACKGROUND, self.id, seconds, force=self.alone)
        if self.leading:
            # Measured from before the request: our view ends no later than the row's.
            self._lease_until = asked + seconds
            if not was:
                log.info("replicas.lease_taken", lease=BACKGROUND, replica=self.id)
            async with self.maker() as db, db.begin():
                await expire_dead(db, self.lease)
            self.takeover.poke(self.lease)
        elif was:
            log.warning("replicas.lease_lost", lease=BACKGROUND, replica=self.id)

    async def start(self) -> None:
        await self.beat()
        # Before this process's gateway links any agent: sessions under our id are an
        # earlier life's (a restart under a fixed SUPPORTBROKER_REPLICA_ID).
        await take_over(self.maker, self.id, self.lease, stale={self.id})
        self._task = asyncio.create_task(self._run(), name="replica-heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_heartbeat_seconds)
            try:
                await self.beat()
            except Exception as exc:  # the database is away (or worse): not leading; retried
                self.leading = False
                log.warning("replicas.heartbeat_failed", replica=self.id, error=str(exc)[:200])

    async def stop(self) -> None:
        """Leave: hand the lease back at once and take this replica out of the list."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.takeover.stop()
        self.leading = False
        with contextlib.suppress(SQLAlchemyError, OSError):
            await release_lease(self.maker, BACKGROUND, self.id)
            async with self.maker() as db, db.begin():
                await db.execute(delete(Replica).where(Replica.id == self.id))
