"""Bodies of the consent API and what the end user is shown about a request."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from broker.consent.service import ConsentView
from broker.providers.offers import recording_of, recording_out
from broker.sessions.schemas import RecordingOut
from broker.sessions.states import Capability, SessionState
from broker.types import Body, CleanText, non_blank

Name = Annotated[CleanText, Field(min_length=1, max_length=200), AfterValidator(non_blank)]
S = SessionState


class LookupIn(Body):
    code: Annotated[str, Field(min_length=1, max_length=40)]


class LookupOut(BaseModel):
    token: str
    url: str


class DecisionIn(Body):
    decision: Literal["approve", "deny"]
    name: Name
    answers: dict[
        Annotated[str, Field(max_length=100)], Annotated[CleanText, Field(max_length=2000)]
    ] = Field(default_factory=dict, max_length=50)
    # The rights the end user grants, a subset of those requested (None: all of them).
    # Approving with none left is a denial.
    capabilities: Annotated[list[Capability], Field(max_length=10)] | None = None


class RevokeIn(Body):
    name: Name | None = None


class RatingIn(Body):
    score: Annotated[int, Field(strict=True, ge=1, le=5)]
    comment: Annotated[CleanText, Field(max_length=2000)] | None = None


class TechnicianOut(BaseModel):
    name: str
    role: str


class TicketOut(BaseModel):
    system: str
    external_id: str
    subject: str


class QuestionOut(BaseModel):
    id: str
    label: str


class TransferOut(BaseModel):
    """A file moved to or from the end user's computer, as the broker sealed it."""

    at: datetime
    direction: str  # upload: to the computer; download: from it
    name: str
    size: int
    sha256: str  # the broker's own hash of the bytes it relayed
    outcome: str  # ok or failed
    why: str | None

    @classmethod
    def of(cls, at: datetime, data: dict[str, Any]) -> TransferOut:
        return cls(
            at=at,
            direction=str(data.get("direction", "")),
            name=str(data.get("name", "")),
            size=int(data.get("size") or 0),
            sha256=str(data.get("sha256", "")),
            outcome=str(data.get("outcome", "")),
            why=str(data["why"]) if data.get("why") else None,
        )


class ConsentOut(BaseModel):
    """Everything the end user needs to decide without being tricked."""

    session_id: str
    state: SessionState
    technician: TechnicianOut
    ticket: TicketOut
    device: str
    reason: str
    capabilities: list[str]
    duration_minutes: int
    # The truth for this provider and these capabilities: True only when content (the
    # terminal, the screen) is recorded; ``recording_note`` says it in the end user's words.
    recorded: bool
    recording: RecordingOut
    recording_note: str
    unattended: bool
    expires_at: datetime
    valid_until: datetime | None
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    questions: list[QuestionOut]
    can_decide: bool
    can_revoke: bool
    can_rate: bool
    rating: int | None
    transfers: list[TransferOut] = Field(default_factory=list)

    @classmethod
    def of(cls, v: ConsentView) -> ConsentOut:
        s, r = v.record.session, v.request
        state = S(s.state)
        recording = recording_of(s.provider, s.capabilities)
        return cls(
            session_id=s.id,
            state=state,
            technician=TechnicianOut(
                name=v.record.technician.display_name, role=v.record.technician.role
            ),
            ticket=TicketOut(
                system=v.record.ticket.system,
                external_id=v.record.ticket.external_id,
                subject=v.record.ticket.subject,
            ),
            device=v.record.device.name,
            reason=s.reason,
            capabilities=list(s.capabilities),
            duration_minutes=s.duration_minutes,
            recorded=recording.recorded,
            recording=recording_out(s.provider, s.capabilities),
            recording_note=recording.for_end_user(),
            unattended=s.unattended,
            expires_at=r.expires_at,
            valid_until=s.deadline_at if state in (S.approved, S.active) else None,
            decision=r.decision,
            decided_by=r.decided_by,
            decided_at=r.decided_at,
            questions=[_question(q) for q in v.questions],
            can_decide=state is S.awaiting_consent and r.decision is None and r.locked_at is None,
            can_revoke=state in (S.approved, S.active),
            can_rate=s.active_at is not None
            and state in (S.ended, S.revoked, S.failed)
            and s.rating is None,
            rating=s.rating,
            transfers=[TransferOut.of(at, data) for at, data in v.transfers],
        )


def _question(q: dict[str, Any]) -> QuestionOut:
    return QuestionOut(id=str(q.get("id", "")), label=str(q.get("label", q.get("id", ""))))
