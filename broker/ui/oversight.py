"""The supervisor's live queue (docs/OVERSIGHT.md): thin pages over ``sessions.oversight``.

- ``GET /ui/oversight``: the open sessions of the supervisor's device groups (every group for
  an admin): waiting or running, since when, which technician; links to watch the terminal
  or the screen read-only; refreshed by htmx every few seconds (``/ui/oversight/rows``)
- ``POST /ui/oversight/{id}/stop``: end a running session, or revoke one not yet running,
  with the reason the form requires (the service refuses a supervisor without one)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.sessions import oversight
from broker.sessions import service as sessions
from broker.sessions.states import SessionState
from broker.ui.kit import page, page_user

router = APIRouter(include_in_schema=False)
QUEUE_PATH = "/ui/oversight"


def oversees(principal: Principal) -> bool:
    return principal.has(Scope.sessions_supervise) or principal.has(Scope.sessions_admin)


@router.get(QUEUE_PATH, response_model=None)
async def queue_page(
    request: Request, who: Annotated[Principal, page_user(oversees)], db: DbSession
) -> Response:
    entries = await oversight.queue(db, who)
    return page(request, "ui/oversight.html", entries=entries)


@router.get(f"{QUEUE_PATH}/rows", response_model=None)
async def queue_rows(
    request: Request, who: Annotated[Principal, page_user(oversees)], db: DbSession
) -> Response:
    entries = await oversight.queue(db, who)
    return page(request, "ui/_oversight_rows.html", entries=entries)


@router.post(QUEUE_PATH + "/{sid}/stop", response_model=None)
async def stop(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(oversees)],
    db: DbSession,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    record = await sessions.get_session(db, who, sid)
    if record.session.state == SessionState.active:
        await sessions.end_session(db, who, sid, reason or None)
    else:
        await sessions.revoke_session(db, who, sid, reason or None)
    return RedirectResponse(QUEUE_PATH, status_code=303)
