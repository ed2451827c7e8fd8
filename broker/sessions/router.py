"""The sessions API (thin: parse, authorise, call one service function).

- ``POST /sessions`` (sessions:write, technicians) → 201 session + consent code and link
- ``GET /sessions`` (sessions:read) filters: ``system`` + ``external_id``, ``technician_id``,
  ``device_id``, ``state``, ``since``/``until`` (requested_at), ``event_type`` (audit:read:
  the ticket's log holds such an event, within since/until), ``limit``/``offset``;
  technicians see only their own sessions
- ``GET /sessions/queue`` (sessions:supervise or sessions:admin): the live queue of open
  sessions, a supervisor's device groups only, oldest request first (docs/OVERSIGHT.md)
- ``GET /sessions/approvals``: requests waiting for a second person the caller may approve
- ``GET /sessions/{id}/approval``: such a request as the end user will see it
- ``POST /sessions/{id}/approval`` ``{"decision": "approve"|"deny", "reason"}``: the second
  person's decision (another technician or a supervisor of the group; never the requester)
- ``GET /sessions/{id}`` (sessions:read)
- ``POST /sessions/{id}/start`` (sessions:write, own): approved → active
- ``POST /sessions/{id}/end`` (sessions:write own, sessions:admin, or the group's supervisor
  with a reason): active → ended
- ``POST /sessions/{id}/cancel`` (sessions:write, own): a request not yet started → revoked
- ``POST /sessions/{id}/revoke`` (sessions:admin, or the group's supervisor with a reason):
  awaiting/approved/active → revoked
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query

from broker.auth.deps import CurrentPrincipal, require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.consent.service import IssuedConsent
from broker.db.session import DbSession
from broker.evidence.events import EventType
from broker.flows import approval
from broker.providers import offers
from broker.sessions import oversight, service
from broker.sessions.repository import SessionFilter, SessionRecord
from broker.sessions.schemas import (
    ActionIn,
    ApprovalIn,
    ApprovalPreview,
    ConsentInfo,
    Queue,
    QueueItem,
    SessionCreate,
    SessionCreated,
    SessionList,
    SessionOut,
    preview_of,
)
from broker.sessions.states import SessionState

router = APIRouter(prefix="/sessions", tags=["sessions"])
# Past any real list, and within a 64-bit integer on PostgreSQL (a larger one was a 500).
MAX_OFFSET = 2**31 - 1
Writer = Annotated[Principal, Depends(require(Scope.sessions_write))]
Reader = Annotated[Principal, Depends(require(Scope.sessions_read))]
Note = Annotated[ActionIn | None, Body()]


@router.post("", status_code=201)
async def create(body: SessionCreate, principal: Writer, db: DbSession) -> SessionCreated:
    record, issued = await approval.create_session(db, principal, body)
    return _created(record, issued)


def _created(record: SessionRecord, issued: IssuedConsent | None) -> SessionCreated:
    out = offers.session_out(record)
    consent = (
        None
        if issued is None
        else ConsentInfo(
            code=None if record.session.unattended else issued.code,
            url=issued.url,
            expires_at=issued.expires_at,
        )
    )
    return SessionCreated(**out.model_dump(), consent=consent)


@router.get("")
async def list_(
    *,
    principal: Reader,
    db: DbSession,
    system: Annotated[str | None, Query(max_length=50)] = None,
    external_id: Annotated[str | None, Query(max_length=100)] = None,
    technician_id: Annotated[str | None, Query(max_length=36)] = None,
    device_id: Annotated[str | None, Query(max_length=36)] = None,
    state: SessionState | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    event_type: EventType | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> SessionList:
    filters = SessionFilter(
        system=system,
        external_id=external_id,
        technician_id=technician_id,
        device_id=device_id,
        state=state,
        since=_aware(since),
        until=_aware(until),
        event_type=event_type,
    )
    records = await service.list_sessions(db, principal, filters, limit=limit, offset=offset)
    return SessionList(items=[offers.session_out(r) for r in records], limit=limit, offset=offset)


@router.get("/queue")
async def queue(principal: Reader, db: DbSession) -> Queue:
    entries = await oversight.queue(db, principal)
    return Queue(
        items=[
            QueueItem(
                session=offers.session_out(e.record), waiting=e.waiting, age_seconds=e.age_seconds
            )
            for e in entries
        ]
    )


@router.get("/approvals")
async def approvals(principal: Reader, db: DbSession) -> SessionList:
    """Requests waiting for a second person that the caller may approve."""
    records = await oversight.awaiting_my_approval(db, principal)
    return SessionList(
        items=[offers.session_out(r) for r in records], limit=oversight.QUEUE_LIMIT, offset=0
    )


@router.get("/{session_id}/approval")
async def approval_preview(session_id: str, principal: Reader, db: DbSession) -> ApprovalPreview:
    record = await approval.approval_preview(db, principal, session_id)
    return ApprovalPreview(session=offers.session_out(record), end_user_sees=preview_of(record))


@router.post("/{session_id}/approval")
async def decide_approval(
    session_id: str, body: ApprovalIn, principal: Reader, db: DbSession
) -> SessionCreated:
    record, issued = await approval.second_approval(
        db, principal, session_id, approve=body.decision == "approve", reason=body.reason
    )
    return _created(record, issued)


@router.get("/{session_id}")
async def get(session_id: str, principal: Reader, db: DbSession) -> SessionOut:
    return offers.session_out(await service.get_session(db, principal, session_id))


@router.post("/{session_id}/start")
async def start(session_id: str, principal: Writer, db: DbSession) -> SessionOut:
    return offers.session_out(await service.start_session(db, principal, session_id))


@router.post("/{session_id}/end")
async def end(
    session_id: str, principal: CurrentPrincipal, db: DbSession, body: Note = None
) -> SessionOut:
    note = body.reason if body else None
    return offers.session_out(await service.end_session(db, principal, session_id, note))


@router.post("/{session_id}/cancel")
async def cancel(
    session_id: str, principal: Writer, db: DbSession, body: Note = None
) -> SessionOut:
    note = body.reason if body else None
    return offers.session_out(await service.cancel_session(db, principal, session_id, note))


@router.post("/{session_id}/revoke")
async def revoke(
    session_id: str, principal: CurrentPrincipal, db: DbSession, body: Note = None
) -> SessionOut:
    note = body.reason if body else None
    return offers.session_out(await service.revoke_session(db, principal, session_id, note))


def _aware(moment: datetime | None) -> datetime | None:
    """A time without a zone is read as UTC (the zone every stored time has)."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
