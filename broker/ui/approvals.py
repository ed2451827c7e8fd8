"""Second-person approval pages (docs/OVERSIGHT.md): thin pages over ``flows.approval``.

- ``GET /ui/approvals``: the requests waiting for a second person that the signed-in
  technician or supervisor may decide (never their own), each with what the end user will
  be shown
- ``POST /ui/approvals/{id}``: approve, or deny with a reason; after an approval the page
  shows the consent code and link to hand on (an agent device asks its user directly)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.flows import approval
from broker.sessions import oversight
from broker.sessions.schemas import preview_of
from broker.ui.kit import page, page_user

router = APIRouter(include_in_schema=False)
PATH = "/ui/approvals"


def approves(principal: Principal) -> bool:
    """Technicians and supervisors may be a second person (the service checks the group)."""
    technician = principal.role == "technician" and principal.has(Scope.sessions_write)
    return technician or principal.has(Scope.sessions_supervise)


@router.get(PATH, response_model=None)
async def approvals_page(
    request: Request, who: Annotated[Principal, page_user(approves)], db: DbSession
) -> Response:
    records = await oversight.awaiting_my_approval(db, who)
    items = [(r, preview_of(r)) for r in records]
    return page(request, "ui/approvals.html", items=items)


@router.post(PATH + "/{sid}", response_model=None)
async def decide(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(approves)],
    db: DbSession,
    decision: Annotated[str, Form(pattern="^(approve|deny)$")] = "approve",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    record, issued = await approval.second_approval(
        db, who, sid, approve=decision == "approve", reason=reason or None
    )
    if issued is None:
        return RedirectResponse(PATH, status_code=303)
    return page(request, "ui/approved.html", record=record, issued=issued)
