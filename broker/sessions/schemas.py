"""Request and response bodies of the sessions API.

Bodies are strict and closed (``extra="forbid"``, :class:`broker.types.Body`); the text and
ticket field types are the shared ones of ``broker/types.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from broker.sessions.repository import SessionRecord
from broker.sessions.states import Capability, SessionState
from broker.types import Body, CleanText, TicketId, TicketSystem


class TicketRefIn(Body):
    system: TicketSystem
    external_id: TicketId
    subject: Annotated[CleanText, Field(max_length=500)] | None = None
    requester: Annotated[CleanText, Field(max_length=200)] | None = None
    # What a device group's second-approval policy may be narrowed by (docs/OVERSIGHT.md).
    priority: Annotated[CleanText, Field(max_length=50)] | None = None
    category: Annotated[CleanText, Field(max_length=100)] | None = None


class SessionCreate(Body):
    """A technician's request for a remote session on a ticket."""

    ticket: TicketRefIn
    device_id: Annotated[str, Field(min_length=1, max_length=36)]
    provider: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,30}$")] | None = None
    # Missing or short reasons are a policy refusal (audited), not a parse error.
    reason: Annotated[CleanText, Field(max_length=2000)] = ""
    capabilities: Annotated[list[Capability], Field(min_length=1, max_length=len(Capability))]
    duration_minutes: Annotated[int, Field(strict=True, ge=1, le=10080)]
    unattended: Annotated[bool, Field(strict=True)] = False


class ActionIn(Body):
    """Optional note for end/revoke/cancel; goes into the audit event."""

    reason: Annotated[CleanText, Field(max_length=500)] | None = None


class TicketOut(BaseModel):
    system: str
    external_id: str
    subject: str
    state: str


class PartyOut(BaseModel):
    id: str
    name: str


class RecordingOut(BaseModel):
    """What is recorded of a session, per its provider and capabilities: the content of
    ``content`` (the agent's terminal), only the events for ``events_only``."""

    recorded: bool
    content: list[str]
    events_only: list[str]
    summary: str


class SessionOut(BaseModel):
    id: str
    state: SessionState
    version: int
    ticket: TicketOut
    technician: PartyOut
    device: PartyOut
    provider: str
    reason: str
    capabilities: list[str]
    recording: RecordingOut
    duration_minutes: int
    unattended: bool
    deadline_at: datetime | None
    requested_at: datetime | None
    awaiting_approval_at: datetime | None
    awaiting_consent_at: datetime | None
    approved_at: datetime | None
    active_at: datetime | None
    ended_at: datetime | None
    denied_at: datetime | None
    expired_at: datetime | None
    revoked_at: datetime | None
    failed_at: datetime | None
    end_reason: str | None
    ended_by: str | None
    rating: int | None

    @classmethod
    def of(cls, record: SessionRecord, recording: RecordingOut) -> SessionOut:
        """``recording`` comes from the providers' declaration
        (:func:`broker.providers.offers.recording_out`), which this domain does not import."""
        s, t = record.session, record.ticket
        return cls(
            id=s.id,
            state=SessionState(s.state),
            version=s.version,
            ticket=TicketOut(
                system=t.system, external_id=t.external_id, subject=t.subject, state=t.state
            ),
            technician=PartyOut(id=record.technician.id, name=record.technician.display_name),
            device=PartyOut(id=record.device.id, name=record.device.name),
            provider=s.provider,
            reason=s.reason,
            capabilities=list(s.capabilities),
            recording=recording,
            duration_minutes=s.duration_minutes,
            unattended=s.unattended,
            deadline_at=s.deadline_at,
            requested_at=s.requested_at,
            awaiting_approval_at=s.awaiting_approval_at,
            awaiting_consent_at=s.awaiting_consent_at,
            approved_at=s.approved_at,
            active_at=s.active_at,
            ended_at=s.ended_at,
            denied_at=s.denied_at,
            expired_at=s.expired_at,
            revoked_at=s.revoked_at,
            failed_at=s.failed_at,
            end_reason=s.end_reason,
            ended_by=s.ended_by,
            rating=s.rating,
        )


class ConsentInfo(BaseModel):
    """What the technician passes to the end user. ``code`` is None for unattended sessions
    (nothing to decide); the link still lets the end user watch and revoke."""

    code: str | None
    url: str
    expires_at: datetime


class SessionCreated(SessionOut):
    # None while a second person must approve first (``awaiting_approval``): the end user
    # is asked, and the code and link made, only after that approval.
    consent: ConsentInfo | None


class SessionList(BaseModel):
    items: list[SessionOut]
    limit: int
    offset: int


class QueueItem(BaseModel):
    """One open session in a supervisor's live queue."""

    session: SessionOut
    waiting: bool  # not answered yet (requested, awaiting consent); else approved or active
    age_seconds: int  # since the request


class Queue(BaseModel):
    items: list[QueueItem]


class ApprovalIn(Body):
    """A second person's decision; a denial needs its reason."""

    decision: Literal["approve", "deny"]
    reason: Annotated[CleanText, Field(max_length=500)] | None = None


class EndUserView(BaseModel):
    """What the end user's consent page will show: the verified technician, the ticket, the
    reason, the device, the rights and the time limit."""

    technician: str
    ticket: str
    subject: str
    device: str
    reason: str
    capabilities: list[str]
    duration_minutes: int
    unattended: bool


class ApprovalPreview(BaseModel):
    session: SessionOut
    end_user_sees: EndUserView


def preview_of(record: SessionRecord) -> EndUserView:
    s = record.session
    return EndUserView(
        technician=record.technician.display_name,
        ticket=record.ticket.external_id,
        subject=record.ticket.subject,
        device=record.device.name,
        reason=s.reason,
        capabilities=list(s.capabilities),
        duration_minutes=s.duration_minutes,
        unattended=s.unattended,
    )
