"""The audit API: a ticket's timeline, whole-log verification, checkpoints, export, erasure.

Auditors read (scope ``audit:read``), the log's own ``_system`` events too
(``GET /audit/system/events``); erasure is an admin's (``users:admin``) and is itself a
sealed record. The public verifier key is public: third parties need it to check bundles.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response

from broker.auth.deps import CurrentPrincipal, require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.base import utcnow
from broker.db.session import DbSession
from broker.errors import NotFound, ValidationFailed
from broker.evidence import proofs, queries
from broker.evidence.schemas import (
    CheckpointOut,
    ConsistencyOut,
    DualControlIn,
    EraseIn,
    EraseOut,
    EventOut,
    ExportIn,
    PlaybackAskIn,
    PlaybackDecisionIn,
    SignedCheckpointOut,
    SystemEventsOut,
    TimelineOut,
    VerifyOut,
)
from broker.evidence.service import audit_log_of
from broker.flows import erasure
from broker.gateway import playback
from broker.types import TicketId, TicketSystem

router = APIRouter(prefix="/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require(Scope.audit_read))]
Admin = Annotated[Principal, Depends(require(Scope.users_admin))]
System = Annotated[TicketSystem, Path()]
External = Annotated[TicketId, Path()]
# A tree size: positive, and within a signed 64-bit column on both databases.
MAX_SIZE = 2**62
Size = Annotated[int, Path(ge=1, le=MAX_SIZE)]


@router.get("/tickets/{system}/{external_id}/events")
async def ticket_events(
    system: System, external_id: External, principal: Auditor, db: DbSession
) -> TimelineOut:
    """Every audit event of the ticket in order, decrypted, with the chain's integrity."""
    found = await queries.timeline(db, principal, f"{system}:{external_id}")
    return TimelineOut(
        stream=found.stream,
        integrity_ok=found.chain_ok,
        problem=found.problem,
        events=[
            EventOut(
                position=r.position,
                record_id=r.record_id,
                seq=r.stream_seq,
                event_type=r.event_type,
                occurred_at=r.occurred_at,
                erased=r.erased,
                payload=r.payload,
            )
            for r in found.records
        ],
    )


@router.get("/system/events")
async def system_events(
    *,
    principal: Auditor,
    db: DbSession,
    event_type: Annotated[str, Query(max_length=100)] = "security",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> SystemEventsOut:
    """The log's own events (``_system``: sign-ins, refusals, lockouts, changes), newest
    first; ``event_type`` is ``security`` (default), ``all`` or one catalogue name."""
    types, start, end = queries.system_filter(event_type, since, until)
    found, more = await queries.system_events(
        db, principal, event_types=types, since=start, until=end, limit=limit, offset=offset
    )
    return SystemEventsOut(
        events=[
            EventOut(
                position=r.position,
                record_id=r.record_id,
                seq=r.stream_seq,
                event_type=r.event_type,
                occurred_at=r.occurred_at,
                erased=r.erased,
                payload=r.payload,
            )
            for r in found
        ],
        limit=limit,
        offset=offset,
        has_more=more,
    )


@router.post("/tickets/{system}/{external_id}/bundle")
async def export_bundle(
    system: System, external_id: External, body: ExportIn, principal: Auditor, db: DbSession
) -> Response:
    """The ticket's evidence bundle (zip); verify it with ``supportbroker audit verify``."""
    stream = f"{system}:{external_id}"
    await playback.require_export(db, principal, stream, include_plaintext=body.include_plaintext)
    data = await queries.export(
        db,
        principal,
        stream,
        include_plaintext=body.include_plaintext,
        reason=body.reason,
    )
    filename = f"evidence-{system}-{external_id}.zip".replace('"', "")
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/playback-requests", status_code=201)
async def ask_playback(body: PlaybackAskIn, principal: Auditor, db: DbSession) -> dict[str, Any]:
    """Ask a second auditor to open a replay (``session_id``) or a plaintext export (ticket)."""
    if body.session_id is None and (body.system is None or body.external_id is None):
        raise ValidationFailed("give session_id (a replay) or system and external_id (an export)")
    ticket = None if body.session_id else f"{body.system}:{body.external_id}"
    row = await playback.ask(
        db, principal, reason=body.reason, session_id=body.session_id, ticket=ticket
    )
    (view,) = [v for v in await playback.listing(db, principal) if v.row.id == row.id]
    return view.as_dict(utcnow())


@router.get("/playback-requests")
async def playback_requests(principal: Auditor, db: DbSession) -> dict[str, Any]:
    """Every pending request (to decide, if not yours) and your own, decided or not."""
    now = utcnow()
    return {"requests": [v.as_dict(now) for v in await playback.listing(db, principal)]}


@router.post("/playback-requests/{request_id}/decision")
async def decide_playback(
    request_id: Annotated[str, Path(max_length=36)],
    body: PlaybackDecisionIn,
    principal: Auditor,
    db: DbSession,
) -> dict[str, Any]:
    """A second auditor approves (the requester may replay or export for a time) or denies."""
    row = await playback.decide(
        db, principal, request_id, approve=body.decision == "approve", reason=body.reason
    )
    return {
        "id": row.id,
        "state": row.state,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }


@router.put("/tickets/{system}/{external_id}/dual-control")
async def ticket_dual_control(
    system: System,
    external_id: External,
    body: DualControlIn,
    principal: CurrentPrincipal,
    db: DbSession,
) -> dict[str, Any]:
    """The ticket's own dual control: on by an auditor or an admin, off by an admin alone."""
    stream = f"{system}:{external_id}"
    ticket = await playback.set_ticket_policy(
        db, principal, stream, on=body.dual_control, reason=body.reason
    )
    return {"ticket": stream, "dual_control": ticket.dual_control}


@router.post("/tickets/{system}/{external_id}/erase")
async def erase_ticket(
    system: System, external_id: External, body: EraseIn, principal: Admin, db: DbSession
) -> EraseOut:
    """Erase the ticket's personal data: every plaintext copy, and its sealed content by
    crypto-shredding; the log (and its proofs) stay verifiable. 409 when nothing was sealed
    for the ticket since its last erasure."""
    stream = f"{system}:{external_id}"
    position = await erasure.erase_ticket(db, principal, stream, reason=body.reason)
    return EraseOut(stream=stream, erasure_position=position)


@router.get("/verify")
async def verify(_: Auditor, db: DbSession) -> VerifyOut:
    """Verify the whole log: every record, chain, checkpoint, and the tree state, and that
    the log reaches the latest checkpoint published outside the database (no rollback)."""
    report = await queries.verify_all(db, published=queries.published_head(db))
    return VerifyOut(
        ok=report.ok,
        size=report.size,
        verdict=report.verdict(),
        position=report.position,
        record_id=report.record_id,
    )


@router.get("/checkpoint")
async def checkpoint(_: Auditor, db: DbSession) -> CheckpointOut:
    """The latest signed checkpoint and how it compares with the published one."""
    log = audit_log_of(db)
    latest = await queries.current_checkpoint(db)
    if latest is None and not await log.size(await db.connection()):
        raise NotFound("the audit log is empty: no checkpoint yet")
    # None with records: none may be signed (a cut tail); the comparison below says why.
    status = await queries.compare_with_published(db)
    return CheckpointOut(
        size=latest.size if latest else 0,
        root=latest.root.hex() if latest else "",
        note=latest.note if latest else "",
        public_key=log.signer.verifier.encode(),
        fingerprint=log.signer.verifier.fingerprint,
        published={"ok": status.ok, "detail": status.detail},
    )


@router.get("/checkpoints/{size}")
async def checkpoint_by_size(size: Size, _: Auditor, db: DbSession) -> SignedCheckpointOut:
    """The checkpoint signed at tree size ``size`` (an ``evidence.sealed`` digest names one)."""
    found = await proofs.checkpoint_at(db, size)
    return SignedCheckpointOut(
        size=found.signed.size,
        root=found.signed.root.hex(),
        note=found.signed.note,
        signed_at=found.signed_at,
        fingerprint=audit_log_of(db).signer.verifier.fingerprint,
    )


@router.get("/consistency")
async def consistency(
    old: Annotated[int, Query(ge=1, le=MAX_SIZE, description="the older checkpoint's size")],
    new: Annotated[int, Query(ge=1, le=MAX_SIZE, description="the newer checkpoint's size")],
    _: Auditor,
    db: DbSession,
) -> ConsistencyOut:
    """The consistency proof between two signed checkpoints (RFC 9162 §2.1.4): the log at
    ``old`` is a prefix of the log at ``new``, so it never forked or shrank in between."""
    found = await proofs.checkpoint_consistency(db, old, new)
    return ConsistencyOut(
        old_size=found.old.size,
        new_size=found.new.size,
        old_root=found.old.root.hex(),
        new_root=found.new.root.hex(),
        proof=[h.hex() for h in found.path],
    )


@router.get("/public-key", response_class=PlainTextResponse)
async def public_key(request: Request) -> str:
    """The verifier key for checkpoints and bundles (``NAME+HASH+KEY``)."""
    return str(request.app.state.audit_log.signer.verifier.encode()) + "\n"
