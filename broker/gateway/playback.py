"""Dual-control playback: two auditors for a recording (docs/OVERSIGHT.md).

When a device group's policy sets ``dual_control_playback``, replaying a recording of a
session on one of its devices, or exporting the plaintext of that session's ticket, needs a
second auditor: the first asks with a reason, a different auditor approves (or denies), and
the approval opens that replay or export to the first auditor alone for
``playback_approval_minutes``. Each step is sealed in the ticket's stream in the same
transaction as its row (``playback.requested``, ``playback.approved``, ``playback.denied``).
Asking is possible without the policy too (a second look never hurts); only the policy makes
the grant a precondition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.context import settings_of
from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup
from broker.errors import Conflict, NotFound, PermissionDenied, PolicyDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.gateway.models import PlaybackRequest
from broker.sessions import service as sessions
from broker.sessions.models import RemoteSession
from broker.sessions.repository import SessionRecord
from broker.tickets.models import Ticket

REPLAY, EXPORT = "replay", "export"
MIN_REASON = 3


@dataclass(frozen=True)
class RequestView:
    """A request as the API and the page show it."""

    row: PlaybackRequest
    requester: str
    decided_by: str | None

    def as_dict(self, now: datetime) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.id,
            "kind": r.kind,
            "ticket": r.ticket_ref,
            "session_id": r.session_id,
            "requester_id": r.requester_id,
            "requester": self.requester,
            "reason": r.reason,
            "state": state_of(r, now),
            "decided_by": self.decided_by,
            "decision_reason": r.decision_reason,
            "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
        }


def state_of(row: PlaybackRequest, now: datetime) -> str:
    """``pending``, ``approved`` (still open), ``expired`` (approved, time up) or ``denied``."""
    if row.state == "approved" and row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return row.state


def _auditor(principal: Principal) -> str:
    if not principal.has(Scope.audit_read) or principal.user_id is None:
        raise PermissionDenied("dual-control playback is for auditors signed in as themselves")
    return principal.user_id


def _reason(text: str | None, what: str) -> str:
    text = (text or "").strip()
    if len(text) < MIN_REASON:
        raise ValidationFailed(f"reason: say why {what}")
    return text


async def session_needs_two(db: AsyncSession, record: SessionRecord) -> bool:
    if record.ticket.dual_control:
        return True
    group = await db.get(DeviceGroup, record.device.group_id)
    return bool(group and group.dual_control_playback)


async def ticket_needs_two(db: AsyncSession, stream: str) -> bool:
    """Whether the ticket's own switch is on, or any of its sessions ran on a device of a
    dual-control group."""
    system, _, external_id = stream.partition(":")
    own = await db.scalar(
        select(Ticket.dual_control).where(
            Ticket.system == system, Ticket.external_id == external_id
        )
    )
    if own:
        return True
    query = select(
        exists()
        .where(Ticket.system == system, Ticket.external_id == external_id)
        .where(RemoteSession.ticket_id == Ticket.id)
        .where(Device.id == RemoteSession.device_id)
        .where(DeviceGroup.id == Device.group_id, DeviceGroup.dual_control_playback.is_(True))
    )
    return bool(await db.scalar(query))


async def set_ticket_policy(
    db: AsyncSession, principal: Principal, stream: str, *, on: bool, reason: str
) -> Ticket:
    """Switch a ticket's own dual control on (an auditor or an admin) or off (an admin).

    Off is an admin's alone: an auditor who could switch it off could then replay alone, and
    an admin cannot replay at all, so the two duties stay apart. The switch is sealed in the
    ticket's stream (``playback.policy_set``) with the reason, even when it changes nothing.
    """
    is_admin = principal.has(Scope.users_admin)
    if not (is_admin or (principal.has(Scope.audit_read) and principal.user_id is not None)):
        raise PermissionDenied("a ticket's dual control is set by an auditor or an admin")
    if not on and not is_admin:
        raise PermissionDenied("only an admin switches a ticket's dual control off")
    system, _, external_id = stream.partition(":")
    ticket = await db.scalar(
        select(Ticket).where(Ticket.system == system, Ticket.external_id == external_id)
    )
    if ticket is None:
        raise NotFound(f"no ticket {stream}")
    reason = _reason(reason, "you change the ticket's dual control")
    was = ticket.dual_control
    ticket.dual_control = on
    await db.flush()
    await record_event(
        db,
        EventType.playback_policy_set,
        ticket=stream,
        actor=principal.actor(),
        data={"dual_control": on, "was": was, "reason": reason},
    )
    return ticket


async def ask(
    db: AsyncSession,
    principal: Principal,
    *,
    reason: str,
    session_id: str | None = None,
    ticket: str | None = None,
) -> PlaybackRequest:
    """A request for a replay of ``session_id`` or a plaintext export of ``ticket``."""
    user_id = _auditor(principal)
    if (session_id is None) == (ticket is None):
        raise ValidationFailed("give either session_id (a replay) or a ticket (an export)")
    reason = _reason(reason, "you need this recording or plaintext")
    if session_id is not None:
        record = await sessions.get_session(db, principal, session_id)
        kind, ref = REPLAY, record.ticket.ref
    else:
        assert ticket is not None
        known = await db.scalar(
            select(Ticket.id).where(
                Ticket.system == ticket.partition(":")[0],
                Ticket.external_id == ticket.partition(":")[2],
            )
        )
        if known is None:
            raise NotFound(f"no ticket {ticket}")
        kind, ref = EXPORT, ticket
    row = PlaybackRequest(
        kind=kind, ticket_ref=ref, session_id=session_id, requester_id=user_id, reason=reason
    )
    db.add(row)
    await db.flush()
    await record_event(
        db,
        EventType.playback_requested,
        ticket=ref,
        actor=principal.actor(),
        data={"request_id": row.id, "kind": kind, "session_id": session_id, "reason": reason},
    )
    return row


async def decide(
    db: AsyncSession, principal: Principal, request_id: str, *, approve: bool, reason: str | None
) -> PlaybackRequest:
    """A second auditor approves (opening it for a time) or denies (with a reason)."""
    user_id = _auditor(principal)
    row = await db.get(PlaybackRequest, request_id)
    if row is None:
        raise NotFound(f"no playback request {request_id}")
    if row.requester_id == user_id:
        raise PermissionDenied("you cannot approve your own request: a second auditor decides")
    if row.state != "pending":
        raise Conflict(f"playback request {request_id} was already decided ({row.state})")
    text = (reason or "").strip() or None
    if not approve:
        text = _reason(text, "you deny it")
    now = utcnow()
    row.state = "approved" if approve else "denied"
    row.decided_by_id, row.decided_at, row.decision_reason = user_id, now, text
    if approve:
        minutes = settings_of(db).playback_approval_minutes
        row.expires_at = now + timedelta(minutes=minutes)
    await db.flush()
    await record_event(
        db,
        EventType.playback_approved if approve else EventType.playback_denied,
        ticket=row.ticket_ref,
        actor=principal.actor(),
        data={
            "request_id": row.id,
            "kind": row.kind,
            "session_id": row.session_id,
            "requester_id": row.requester_id,
            "reason": text,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        },
    )
    return row


async def listing(db: AsyncSession, principal: Principal) -> list[RequestView]:
    """Every pending request, and the caller's own decided ones, newest first."""
    user_id = _auditor(principal)
    query = (
        select(PlaybackRequest)
        .where(or_(PlaybackRequest.state == "pending", PlaybackRequest.requester_id == user_id))
        .order_by(PlaybackRequest.created_at.desc())
        .limit(200)
    )
    rows = list((await db.scalars(query)).all())
    ids = {r.requester_id for r in rows} | {r.decided_by_id for r in rows if r.decided_by_id}
    names = {u.id: u.username for u in (await db.scalars(select(User).where(User.id.in_(ids))))}
    return [
        RequestView(r, names.get(r.requester_id, "?"), names.get(r.decided_by_id or ""))
        for r in rows
    ]


async def _granted(
    db: AsyncSession, user_id: str, kind: str, *, session_id: str | None, ticket: str
) -> bool:
    query = select(PlaybackRequest.id).where(
        PlaybackRequest.kind == kind,
        PlaybackRequest.ticket_ref == ticket,
        PlaybackRequest.requester_id == user_id,
        PlaybackRequest.state == "approved",
        PlaybackRequest.expires_at > utcnow(),
    )
    if session_id is not None:
        query = query.where(PlaybackRequest.session_id == session_id)
    return (await db.scalar(query.limit(1))) is not None


async def require_replay(db: AsyncSession, principal: Principal, record: SessionRecord) -> None:
    """Refuse a replay under the policy unless a second auditor opened it to this caller."""
    if not await session_needs_two(db, record):
        return
    user_id = _auditor(principal)
    sid = record.session.id
    if not await _granted(db, user_id, REPLAY, session_id=sid, ticket=record.ticket.ref):
        raise PolicyDenied(
            f"session {sid} is under dual control: ask a second auditor first "
            "(POST /api/v1/audit/playback-requests) and replay once they approved"
        )


async def require_export(
    db: AsyncSession, principal: Principal, stream: str, *, include_plaintext: bool
) -> None:
    """Refuse a plaintext export under the policy unless a second auditor opened it."""
    if not include_plaintext or not await ticket_needs_two(db, stream):
        return
    user_id = _auditor(principal)
    if not await _granted(db, user_id, EXPORT, session_id=None, ticket=stream):
        raise PolicyDenied(
            f"ticket {stream} is under dual control: a plaintext export needs a second "
            "auditor's approval first (POST /api/v1/audit/playback-requests)"
        )


async def require_export_request(
    db: AsyncSession, stream: str, *, include_plaintext: bool, request_id: str | None
) -> PlaybackRequest | None:
    """The command line's check: a plaintext export under the policy names an approved request.

    ``supportbroker audit export`` runs as the operator, not as a signed-in auditor, so it
    cannot be the requester; it takes the id of a request that a second auditor approved (the
    same flow as the API and the page) and refuses without one. A request given without the
    policy is checked too, so a typo never passes silently.
    """
    needed = include_plaintext and await ticket_needs_two(db, stream)
    if request_id is None:
        if needed:
            raise PolicyDenied(
                f"ticket {stream} is under dual control: a plaintext export needs a second "
                "auditor's approval; ask for it (POST /api/v1/audit/playback-requests or the "
                "page /ui/audit/playback), then pass the approved request with --approval ID"
            )
        return None
    row = await db.get(PlaybackRequest, request_id)
    if row is None or row.kind != EXPORT or row.ticket_ref != stream:
        raise PolicyDenied(f"{request_id} is not a request to export the plaintext of {stream}")
    state = state_of(row, utcnow())
    if state != "approved":
        raise PolicyDenied(
            f"playback request {request_id} is {state}: a second auditor must approve it "
            "(and the approval must not have expired)"
        )
    return row
