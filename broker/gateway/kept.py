"""Files a group keeps: each transferred file itself, for auditors (docs/FILES.md).

With the group's ``keep_files`` on, every piece the broker relays is sealed as a ``file.kept``
event in the ticket's audit stream, in its own transaction as it passes: encrypted with the
ticket's key like a terminal recording, hash-chained with the session's events, and erased
with them. An auditor downloads the file later with a reason; the ``file.viewed`` event is
committed before a byte leaves, and the reassembled file must match the broker's sealed
SHA-256 or nothing is sent.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.aftercommit import transaction
from broker.errors import AuditFailure, NotFound, PermissionDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event, sealed_data
from broker.sessions import service as sessions

MIN_REASON = 3
MAX_PIECES = 1_000_000  # far above any limit: pieces are at most a few MiB each


async def keep_piece(
    maker: async_sessionmaker[AsyncSession],
    session_id: str,
    actor: Actor,
    transfer_id: str,
    index: int,
    data: bytes,
) -> None:
    """Seal one piece of a kept file; an error here fails the transfer (fail-closed)."""
    async with transaction(maker) as db:
        record, _ = await sessions.load(db, session_id)
        await record_event(
            db,
            EventType.file_kept,
            ticket=record.ticket.ref,
            actor=actor,
            data={
                "session_id": session_id,
                "transfer_id": transfer_id,
                "index": index,
                "data": base64.b64encode(data).decode("ascii"),
            },
        )


async def session_transfers(
    db: AsyncSession, session_id: str, stream: str
) -> list[tuple[Any, dict[str, Any]]]:
    """The session's transfers as sealed (``session.file_transfer``), oldest first: what a
    watcher and an auditor see is what the chain holds."""
    sealed = await sealed_data(db, stream, EventType.session_file_transfer, limit=MAX_PIECES)
    return [(at, d) for at, d in sealed if d.get("session_id") == session_id]


async def kept_files(
    db: AsyncSession, principal: Principal, session_id: str
) -> list[tuple[Any, dict[str, Any]]]:
    """The whole transfers of a session whose file the group kept (for the auditor's page);
    listing them shows only what the timeline shows, so it is not itself sealed."""
    if not principal.has(Scope.audit_read):
        raise PermissionDenied("kept files are for auditors (audit:read)")
    record = await sessions.get_session(db, principal, session_id)
    return [
        (at, d)
        for at, d in await session_transfers(db, session_id, record.ticket.ref)
        if d.get("kept") is not None and d.get("outcome") == "ok"
    ]


async def kept_file(
    db: AsyncSession, principal: Principal, session_id: str, transfer_id: str, *, reason: str
) -> tuple[str, bytes]:
    """The name and bytes of a whole transfer's kept file; the viewing is committed first."""
    if not principal.has(Scope.audit_read):
        raise PermissionDenied("downloading a kept file needs the audit:read scope")
    reason = reason.strip()
    if len(reason) < MIN_REASON:
        raise ValidationFailed("reason: why the file is needed is required")
    record = await sessions.get_session(db, principal, session_id)
    stream = record.ticket.ref
    sealed = await sealed_data(db, stream, EventType.session_file_transfer, limit=MAX_PIECES)
    found = _transfer(sealed, session_id, transfer_id)
    await record_event(
        db,
        EventType.file_viewed,
        ticket=stream,
        actor=principal.actor(),
        data={
            "session_id": session_id,
            "transfer_id": transfer_id,
            "name": found.get("name"),
            "sha256": found.get("sha256"),
            "reason": reason,
            "auditor_id": principal.user_id,
            "auditor": principal.name,
        },
    )
    await db.commit()  # the download is on record before the content leaves the broker
    pieces = [
        d
        for _, d in await sealed_data(db, stream, EventType.file_kept, limit=MAX_PIECES)
        if d.get("transfer_id") == transfer_id and d.get("session_id") == session_id
    ]
    pieces.sort(key=lambda d: int(d.get("index", 0)))
    body = b"".join(base64.b64decode(str(d.get("data", ""))) for d in pieces)
    if len(pieces) != found.get("kept") or hashlib.sha256(body).hexdigest() != found["sha256"]:
        raise AuditFailure(
            f"the kept file of transfer {transfer_id} does not match its sealed SHA-256"
        )
    return str(found.get("name") or "file"), body


def _transfer(
    sealed: list[tuple[Any, dict[str, Any]]], session_id: str, transfer_id: str
) -> dict[str, Any]:
    for _, data in sealed:
        if data.get("session_id") == session_id and data.get("transfer_id") == transfer_id:
            if data.get("kept") is None:
                raise NotFound(f"transfer {transfer_id}: its group did not keep the file")
            if data.get("outcome") != "ok":
                raise NotFound(f"transfer {transfer_id} failed: no whole file was kept")
            return data
    raise NotFound(f"session {session_id} has no transfer {transfer_id}")
