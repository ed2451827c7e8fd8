"""Request and response bodies of the tickets API.

Bodies are closed (``extra="forbid"``) and use the text rules of the sessions API: no
control characters or bidi overrides anywhere a human will later read the text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from broker.tickets.models import Ticket
from broker.types import Body, CleanText, TicketId, TicketSystem, clean_text, non_blank


def lower(value: str) -> str:
    return value.lower()


# States are free words (each help desk has its own) but short, printable and lower-cased,
# so ``state=closed`` finds "Closed" and ``Ticket.is_open`` reads them all the same way.
TicketState = Annotated[
    str, Field(pattern=r"^[A-Za-z][A-Za-z0-9 _-]{0,29}$"), AfterValidator(lower)
]
Subject = Annotated[
    str, Field(min_length=1, max_length=500), AfterValidator(clean_text), AfterValidator(non_blank)
]
Person = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(clean_text), AfterValidator(non_blank)
]
TicketUrl = Annotated[
    str, Field(max_length=1000, pattern=r"^https?://\S+$"), AfterValidator(clean_text)
]


class TicketCreate(Body):
    system: TicketSystem
    external_id: TicketId
    subject: Subject
    requester: Person
    state: TicketState = "open"
    url: TicketUrl | None = None


class TicketUpdate(Body):
    """Only the fields sent change; ``assignee: null`` clears the assignee."""

    subject: Subject | None = None
    state: TicketState | None = None
    assignee: Person | None = None


class TicketOut(BaseModel):
    id: str
    system: str
    external_id: str
    ref: str
    subject: str
    requester: str
    state: str
    is_open: bool
    assignee: str | None
    url: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, ticket: Ticket) -> TicketOut:
        return cls(
            id=ticket.id,
            system=ticket.system,
            external_id=ticket.external_id,
            ref=ticket.ref,
            subject=ticket.subject,
            requester=ticket.requester,
            state=ticket.state,
            is_open=ticket.is_open,
            assignee=ticket.assignee,
            url=ticket.url,
            created_at=ticket.created_at,
            updated_at=ticket.updated_at,
        )


class TicketList(BaseModel):
    items: list[TicketOut]
    total: int
    limit: int
    offset: int


__all__ = [
    "CleanText",
    "TicketCreate",
    "TicketId",
    "TicketList",
    "TicketOut",
    "TicketSystem",
    "TicketUpdate",
    "clean_text",
]
