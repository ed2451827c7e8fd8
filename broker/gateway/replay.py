"""Auditors list and replay a session's terminal recordings; every playback is audited first.

The ``recording.viewed`` event (who, why, which recording) is committed before a single byte
of the recording is read, so there is no replay the log does not know about.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.errors import NotFound, PermissionDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import audit_log_of, record_event
from broker.gateway.desktop_recording import FORMAT, read_rfb
from broker.gateway.playback import require_replay
from broker.gateway.recording import RecordingSummary, list_recordings, read_cast
from broker.sessions import service as sessions

MIN_REASON = 3


@dataclass(frozen=True)
class Replay:
    recording_id: str
    text: str
    complete: bool
    chunks: int
    problem: str | None
    format: str = "asciicast"  # "rfb": ``text`` is the desktop player's JSON


def _auditor(principal: Principal) -> None:
    if not principal.has(Scope.audit_read):
        raise PermissionDenied("replaying recordings needs the audit:read scope")


async def recordings_of(
    db: AsyncSession, principal: Principal, session_id: str
) -> list[RecordingSummary]:
    _auditor(principal)
    record = await sessions.get_session(db, principal, session_id)
    conn = await db.connection()
    return await list_recordings(audit_log_of(db), conn, record.ticket.ref, session_id)


async def replay(
    db: AsyncSession,
    principal: Principal,
    session_id: str,
    *,
    reason: str,
    recording_id: str | None = None,
) -> Replay:
    """Audit the viewing (committed), then reassemble the asciicast."""
    _auditor(principal)
    reason = reason.strip()
    if len(reason) < MIN_REASON:
        raise ValidationFailed("a reason for viewing the recording is required")
    found = await recordings_of(db, principal, session_id)
    await require_replay(db, principal, (await sessions.load(db, session_id))[0])
    if recording_id is None:
        if not found:
            raise NotFound(f"session {session_id} has no recordings")
        recording_id = found[-1].recording_id
    elif recording_id not in {r.recording_id for r in found}:
        raise NotFound(f"session {session_id} has no recording {recording_id}")
    kind = next(r.format for r in found if r.recording_id == recording_id)
    record, _ = await sessions.load(db, session_id)
    await record_event(
        db,
        EventType.recording_viewed,
        ticket=record.ticket.ref,
        actor=principal.actor(),
        data={
            "session_id": session_id,
            "recording_id": recording_id,
            "reason": reason,
            "auditor_id": principal.user_id,
            "auditor": principal.name,
        },
    )
    await db.commit()  # the viewing is on record before the content leaves the broker
    conn = await db.connection()
    if kind == FORMAT:
        screen = await read_rfb(audit_log_of(db), conn, record.ticket.ref, recording_id)
        return Replay(
            recording_id,
            screen.player_data(),
            screen.complete,
            screen.chunks,
            screen.problem,
            format=FORMAT,
        )
    cast = await read_cast(audit_log_of(db), conn, record.ticket.ref, recording_id)
    return Replay(recording_id, cast.text, cast.complete, cast.chunks, cast.problem)
