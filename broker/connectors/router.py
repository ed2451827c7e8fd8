"""HTTP routes of the connectors: inbound webhooks, the ticket deep link, the admin overview.

Two routers: ``router`` (mount under ``/api/v1``) and ``link_router`` (mount at the root,
it serves ``/t/{system}/{external_id}/connect``, the link ticket UIs show).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse

from broker.auth.deps import require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.connectors import service
from broker.db.session import DbSession
from broker.flows import tickets as flows

router = APIRouter(tags=["connectors"])
link_router = APIRouter(tags=["connectors"])

System = Annotated[str, Path(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")]
ExternalId = Annotated[str, Path(min_length=1, max_length=100)]
Admin = Annotated[Principal, Depends(require(Scope.users_admin))]


@router.post("/connectors/{system}/webhook")
async def webhook(system: System, request: Request, db: DbSession) -> dict[str, Any]:
    """A ticket system reports a change; authenticated by its signature, not a token."""
    body = await request.body()
    tickets = await flows.apply_webhook(db, system, dict(request.headers), body)
    return {"accepted": True, "tickets": tickets}


@router.get("/connectors")
async def list_connectors(_: Admin, db: DbSession) -> dict[str, Any]:
    return {"connectors": await service.connectors_status(db)}


@router.get("/connectors/rejected")
async def rejected(
    _: Admin,
    db: DbSession,
    system: Annotated[str | None, Query(max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Inbound deliveries that were refused (forged, stale, replayed, unreadable), as kept."""
    return {"rejected": await service.rejected_deliveries(db, system, limit=limit)}


@link_router.get("/t/{system}/{external_id:path}/connect", include_in_schema=False)
async def connect(system: System, external_id: ExternalId) -> RedirectResponse:
    """Land the technician on the request form pre-filled for this ticket."""
    query = urlencode({"system": system, "ticket": external_id})
    return RedirectResponse(f"/sessions/new?{query}", status_code=303)
