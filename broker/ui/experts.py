"""``POST /ui/sessions/{id}/invite``: the session's technician invites an expert.

The form lists the technicians of the device's group
(``broker.sessions.invitations.candidates``); the invited expert finds the session under
"Invited to help" in their console, opens its page and joins the terminal from there
(``/terminal/{id}?mode=join``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.sessions import invitations as invites
from broker.ui.common import is_technician
from broker.ui.kit import page_user

router = APIRouter(include_in_schema=False)


@router.post("/ui/sessions/{sid}/invite", response_model=None)
async def invite(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(is_technician)],
    db: DbSession,
    expert_id: Annotated[str, Form(max_length=36)] = "",
) -> Response:
    await invites.invite(db, who, sid, expert_id)
    return RedirectResponse(f"/ui/sessions/{sid}#experts", status_code=303)
