"""The end user's history API (no login: the history link's token is the credential).

- ``GET /history/{token}`` → every session on the device the consent request was for
- ``GET /history/{token}/receipts/{session_id}`` → that session's consent receipt, with its
  place in the audit log and the inclusion proof (404 for another device's session)

Unknown tokens answer 404, tokens past ``consent_link_retention_days`` 410.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from broker.auth.deps import client_ip
from broker.db.session import DbSession
from broker.flows import history
from broker.history.schemas import HistoryOut

router = APIRouter(prefix="/history", tags=["history"])


@router.get("/{token}")
async def show(token: str, request: Request, db: DbSession) -> HistoryOut:
    found = await history.view(db, token, ip=client_ip(request))
    return HistoryOut.of(found, f"/api/v1/history/{token}")


@router.get("/{token}/receipts/{session_id}")
async def receipt(token: str, session_id: str, request: Request, db: DbSession) -> dict[str, Any]:
    return await history.receipt(db, token, session_id, ip=client_ip(request))
