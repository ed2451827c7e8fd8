"""The end user's history page (server-rendered; the path token is the credential).

- ``GET /history/{token}``: every session on the device the consent request was for
- ``GET /history/{token}/receipts/{session_id}``: a session's consent receipt, downloaded
  as a JSON file

A bad link answers the error page with 404, an expired one with 410 (broker.flows.history).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from broker.auth.deps import client_ip
from broker.db.session import DbSession
from broker.errors import BrokerError, status_for
from broker.flows import history
from broker.history.schemas import HistoryOut
from broker.ui.kit import templates

router = APIRouter(tags=["history pages"], include_in_schema=False)


def _error(request: Request, exc: BrokerError) -> HTMLResponse:
    status = status_for(exc)
    return templates.TemplateResponse(
        request,
        "history/error.html",
        {"error": exc.detail, "gone": status == 410},
        status_code=status,
    )


@router.get("/history/{token}", response_class=HTMLResponse)
async def show(request: Request, token: str, db: DbSession) -> HTMLResponse:
    try:
        found = await history.view(db, token, ip=client_ip(request))
    except BrokerError as exc:
        await db.rollback()
        return _error(request, exc)
    out = HistoryOut.of(found, f"/history/{token}")
    return templates.TemplateResponse(request, "history/device.html", {"history": out})


@router.get("/history/{token}/receipts/{session_id}", response_model=None)
async def receipt(request: Request, token: str, session_id: str, db: DbSession) -> Response:
    try:
        document = await history.receipt(db, token, session_id, ip=client_ip(request))
    except BrokerError as exc:
        await db.rollback()
        return _error(request, exc)
    body = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    name = f"consent-receipt-{session_id}.json"
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
