"""Agent enrollment, agent identity, and what the agents tell us about sessions.

Everything that changes state writes its audit event in the same transaction. Session state
changes go through ``broker.sessions.service`` only; a device's consent decision is sealed
here and applied by ``broker.flows.approval``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.secrets import new_token, token_hash
from broker.connectors import service as connectors
from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup
from broker.devices.repository import GroupRepository
from broker.devices.service import create_device, get_group
from broker.errors import NotAuthenticated, NotFound, PolicyDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, Actor, record_event
from broker.gateway import receipts
from broker.gateway.models import AgentEnrollmentToken, AgentKey
from broker.gateway.relay import ChannelRefused
from broker.gateway.repository import AgentKeyRepository, TokenRepository
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord

PROVIDER = "agent"
MAX_TOKEN_HOURS = 24 * 7
DESKTOP_CAPABILITIES = frozenset({"view", "control"})
T = TypeVar("T")


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once, never stored
    token_id: str
    group: str
    expires_at: str


async def create_enrollment_token(
    db: AsyncSession, *, group: str, actor: Actor, hours: float = 24.0
) -> IssuedToken:
    """A one-time token that enrolls one device into ``group`` (id or name)."""
    if not 0 < hours <= MAX_TOKEN_HOURS:
        raise ValidationFailed(f"hours: between 0 and {MAX_TOKEN_HOURS}")
    found = await _group(db, group)
    secret = new_token("sbe")
    row = AgentEnrollmentToken(
        token_hash=token_hash(secret),
        prefix=secret[:10],
        group_id=found.id,
        created_by=actor.name,
        expires_at=utcnow() + timedelta(hours=hours),
    )
    await TokenRepository(db).add(row)
    await record_event(
        db,
        EventType.agent_token_created,
        ticket=None,
        actor=actor,
        data={
            "token_id": row.id,
            "prefix": row.prefix,
            "group": found.name,
            "expires_at": row.expires_at.isoformat(),
        },
    )
    return IssuedToken(secret, row.id, found.name, row.expires_at.isoformat())


async def _group(db: AsyncSession, ref: str) -> DeviceGroup:
    found = await GroupRepository(db).by_name(ref)
    return found if found is not None else await get_group(db, ref)


def policy_of(group: DeviceGroup) -> dict[str, Any]:
    """What the agent enforces locally (sent at every connect, so changes apply on reconnect)."""
    return {
        "allowed_ports": list(group.allowed_ports),
        "allowed_paths": list(group.allowed_paths),
        "unattended_allowed": group.unattended_allowed,
        "record_input": group.record_input,
    }


async def enroll(
    db: AsyncSession, *, token: str, public_key: str, fingerprint: str, hostname: str, ip: str
) -> tuple[Device, DeviceGroup]:
    """Consume ``token`` and register the device with the key that proved itself in SSH."""
    now = utcnow()
    repo = TokenRepository(db)
    row = await repo.by_hash(token_hash(token))
    actor = Actor(kind="agent", name=hostname[:200], ip=ip)
    problem = None
    if row is None:
        problem = "unknown token"
    elif row.used_at is not None:
        problem = "token already used"
    elif row.expires_at <= now:
        problem = "token expired"
    elif await AgentKeyRepository(db).by_fingerprint(fingerprint) is not None:
        problem = "this device key is already enrolled"
    if row is None or problem is not None:
        await record_event(
            db,
            EventType.agent_enrollment_refused,
            ticket=None,
            actor=actor,
            data={"why": problem, "fingerprint": fingerprint},
        )
        raise NotAuthenticated(f"enrollment refused: {problem}", keep_changes=True)
    group = await get_group(db, row.group_id)
    device = await create_device(
        db,
        actor=actor,
        name=hostname[:200] or fingerprint[-12:],
        group_id=group.id,
        provider=PROVIDER,
        provider_device_id=fingerprint,
    )
    if not await repo.consume(row.id, device.id, now):
        raise NotAuthenticated("enrollment refused: token already used", keep_changes=True)
    await AgentKeyRepository(db).add(
        AgentKey(
            device_id=device.id,
            fingerprint=fingerprint,
            public_key=public_key,
            hostname=hostname[:255],
        )
    )
    await record_event(
        db,
        EventType.agent_enrolled,
        ticket=None,
        actor=actor,
        data={
            "device_id": device.id,
            "group": group.name,
            "fingerprint": fingerprint,
            "token_id": row.id,
        },
    )
    return device, group


async def identify(db: AsyncSession, fingerprint: str) -> tuple[AgentKey, Device, DeviceGroup]:
    key = await AgentKeyRepository(db).by_fingerprint(fingerprint)
    if key is None or key.revoked_at is not None:
        raise NotAuthenticated("unknown or revoked agent key")
    device = await db.get(Device, key.device_id)
    if device is None:
        raise NotFound(f"device {key.device_id} is gone")
    return key, device, await get_group(db, device.group_id)


async def mark_presence(
    db: AsyncSession, marks: dict[str, tuple[str | None, str | None]], holder: str
) -> None:
    """Many agents' (node, ip) in two bulk UPDATEs: connects by primary key (a connect also
    stamps ``connected_at``), disconnects only where the link is still ``holder``'s: a
    replica's late disconnect (it was cut off from the database) must not clear the link the
    agent has since made to another replica. Rows for unknown ids are skipped."""
    now = utcnow()
    known = set(
        (await db.scalars(select(AgentKey.device_id).where(AgentKey.device_id.in_(marks)))).all()
    )
    up = [
        {"device_id": d, "connected_node": n, "peer_address": ip, "last_seen_at": now,
         "connected_at": now}
        for d, (n, ip) in marks.items() if n is not None and d in known
    ]  # fmt: skip
    down = [{"b_device": d, "b_ip": ip} for d, (n, ip) in marks.items() if n is None and d in known]
    if up:
        await db.execute(update(AgentKey), up)
    if down:
        keys = cast(Table, AgentKey.__table__)  # Core: executemany with extra WHERE
        await db.execute(
            update(keys)
            .where(keys.c.device_id == bindparam("b_device"), keys.c.connected_node == holder)
            .values(connected_node=None, peer_address=bindparam("b_ip"), last_seen_at=now),
            down,
        )


def note_unavailable(device: Device, reported: object) -> None:
    """Keep what the device's agent says it cannot give (from its hello), as the gate reads
    it: known rights only, reasons cut to 300 characters; written only when it changed."""
    from broker.sessions.states import Capability

    known = {c.value for c in Capability}
    found = reported if isinstance(reported, dict) else {}
    clean = {str(k): str(v)[:300] for k, v in found.items() if str(k) in known}
    if clean != device.unavailable:
        device.unavailable = clean


def device_actor(device: Device, name: str | None = None, ip: str | None = None) -> Actor:
    return Actor(kind="end_user", id=device.id, name=name or f"user at {device.name}", ip=ip)


async def session_for_device(db: AsyncSession, session_id: str, device_id: str) -> SessionRecord:
    record, _ = await sessions.load(db, session_id)
    if record.session.device_id != device_id:
        raise PolicyDenied(f"session {session_id} is not for this device")
    return record


@dataclass(frozen=True)
class SignedDecision:
    """A device-signed consent decision, verified and sealed (``consent.receipt``)."""

    record: SessionRecord
    actor: Actor
    decided_by: str
    approved: bool


async def seal_receipt(
    db: AsyncSession,
    *,
    device: Device,
    key: AgentKey,
    receipt: dict[str, Any],
    signature: str,
    ip: str | None,
) -> SignedDecision:
    """Verify the device-signed decision against the request we sent and seal it; the
    session's move follows in ``broker.flows.approval.device_decision``."""
    record = await session_for_device(db, str(receipt.get("session_id")), device.id)
    receipts.verify(record, key.public_key, key.fingerprint, receipt, signature)
    who = str(receipt.get("decided_by", ""))[:100]
    actor = device_actor(device, who, ip)
    await record_event(
        db,
        EventType.consent_receipt,
        ticket=record.ticket.ref,
        actor=actor,
        data={
            "session_id": record.session.id,
            "receipt": receipt,
            "signature": signature,
            "device_fingerprint": key.fingerprint,
        },
    )
    return SignedDecision(record, actor, who, approved=receipt["decision"] == "approve")


async def end_from_device(
    db: AsyncSession, device: Device, session_id: str, who: str, ip: str | None
) -> None:
    record = await session_for_device(db, session_id, device.id)
    await sessions.revoke_by_end_user(
        db, record, actor=device_actor(device, who, ip), name=who, keep=False
    )


async def record_file_transfer(db: AsyncSession, device: Device, msg: dict[str, Any]) -> None:
    record = await session_for_device(db, str(msg.get("session_id")), device.id)
    fields = ("name", "size", "sha256", "direction")
    facts = {f: msg.get(f) for f in fields}
    await record_event(
        db,
        EventType.session_file_transfer,
        ticket=record.ticket.ref,
        actor=device_actor(device),
        data={"session_id": record.session.id, **facts},
    )
    # What the log holds is written back to the ticket as a step of the session's story.
    await connectors.file_transferred(db, record.ticket, session_id=record.session.id, facts=facts)


async def fail_lost(db: AsyncSession, session_id: str, why: str) -> bool:
    """An open session whose agent vanished → failed; False if it had already ended."""
    return await sessions.fail_if_running(db, session_id, actor=SYSTEM_ACTOR, why=why)


async def record_gap(
    db: AsyncSession, record: SessionRecord, recording_id: str, why: str, **facts: Any
) -> None:
    """A recording of ``record`` that stops short of its end record: a chunk could not be
    sealed, or the replica recording it stopped (``facts``: which, after which chunk)."""
    await record_event(
        db,
        EventType.recording_gap,
        ticket=record.ticket.ref,
        actor=SYSTEM_ACTOR,
        data={"session_id": record.session.id, "recording_id": recording_id, "why": why, **facts},
    )


async def record_forward(db: AsyncSession, record: SessionRecord, port: int) -> None:
    """A technician's port forward to the device was opened (the agent accepted the port)."""
    await record_event(
        db,
        EventType.session_forward_opened,
        ticket=record.ticket.ref,
        actor=SYSTEM_ACTOR,
        data={"session_id": record.session.id, "port": port},
    )


async def _refusal(db: AsyncSession, record: SessionRecord, channel: str, port: int | None) -> str:
    """Why the broker's own rules refuse the channel ("" if they allow it)."""
    capabilities = set(record.session.capabilities)
    if channel == "shell" and "shell" not in capabilities:
        return "the session was not approved for a shell"
    if channel == "desktop" and not capabilities & DESKTOP_CAPABILITIES:
        return "the session was not approved for the screen (view or control)"
    if channel == "forward":
        if "forward" not in capabilities:
            return "the session was not approved for port forwards"
        group = await get_group(db, record.device.group_id)
        if port not in group.allowed_ports:
            return f"port {port} is not allowed for the device group {group.name}"
    return ""


async def open_channel(
    db: AsyncSession,
    record: SessionRecord,
    actor: Actor,
    opener: Callable[[], Awaitable[T]],
    *,
    channel: str,
    port: int | None = None,
    detail: dict[str, Any] | None = None,
) -> T:
    """Open a ``shell``, ``forward`` or ``desktop`` channel of ``record`` with ``opener``: the
    broker's rules first (the approved rights, the group's ports), then the agent's, checked
    on the device.

    A refusal by either is sealed as ``session.channel_refused`` and kept (``PolicyDenied``
    with ``keep_changes``): nothing of the attempt reads as a start. An opened forward is
    sealed as ``session.forward_opened`` in the caller's transaction, a desktop as
    ``session.desktop_opened`` with ``detail`` (the viewer's mode, whether input passes)."""
    why, by = await _refusal(db, record, channel, port), "broker"
    if not why:
        try:
            opened = await opener()
        except ChannelRefused as exc:
            why, by = exc.detail, "agent"
        else:
            if channel == "forward" and port is not None:
                await record_forward(db, record, port)
            elif channel == "desktop":
                await record_event(
                    db,
                    EventType.session_desktop_opened,
                    ticket=record.ticket.ref,
                    actor=actor,
                    data={"session_id": record.session.id, **(detail or {})},
                )
            return opened
    data: dict[str, Any] = {"session_id": record.session.id, "channel": channel, **(detail or {})}
    if port is not None:
        data["port"] = port
    await record_event(
        db,
        EventType.session_channel_refused,
        ticket=record.ticket.ref,
        actor=actor,
        data={**data, "refused_by": by, "why": why},
    )
    raise PolicyDenied(why, keep_changes=True)
