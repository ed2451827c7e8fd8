"""The consent API for the end user (no login: the link token, or a code exchanged for it,
is the credential).

- ``POST /consent/lookup`` {code} → {token, url}; throttled per client and per code
- ``GET /consent/{token}`` → what the end user is asked to approve
- ``POST /consent/{token}/decision`` {decision, name, answers?} → single use
- ``POST /consent/{token}/revoke`` {name?} → ends an approved or active session
- ``POST /consent/{token}/rating`` {score, comment?} → once, after the session ended
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request

from broker.auth.deps import client_ip
from broker.consent.schemas import ConsentOut, DecisionIn, LookupIn, LookupOut, RatingIn, RevokeIn
from broker.context import settings_of
from broker.db.session import DbSession
from broker.flows import approval

router = APIRouter(prefix="/consent", tags=["consent"])
Token = Annotated[str, "the link token from the consent URL"]


@router.post("/lookup")
async def lookup(body: LookupIn, request: Request, db: DbSession) -> LookupOut:
    token = await approval.lookup_code(db, body.code, ip=client_ip(request))
    return LookupOut(token=token, url=f"{settings_of(db).base_url}/consent/{token}")


@router.get("/{token}")
async def show(token: Token, db: DbSession) -> ConsentOut:
    return ConsentOut.of(await approval.view(db, token))


@router.post("/{token}/decision")
async def decide(token: Token, body: DecisionIn, request: Request, db: DbSession) -> ConsentOut:
    view = await approval.decide(
        db,
        token,
        approve=body.decision == "approve",
        name=body.name,
        answers=body.answers,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        granted=None if body.capabilities is None else [c.value for c in body.capabilities],
    )
    return ConsentOut.of(view)


@router.post("/{token}/revoke")
async def revoke(
    token: Token, request: Request, db: DbSession, body: Annotated[RevokeIn | None, Body()] = None
) -> ConsentOut:
    name = body.name if body else None
    return ConsentOut.of(await approval.revoke(db, token, name=name, ip=client_ip(request)))


@router.post("/{token}/rating")
async def rating(token: Token, body: RatingIn, request: Request, db: DbSession) -> ConsentOut:
    view = await approval.rate(
        db, token, score=body.score, comment=body.comment, ip=client_ip(request)
    )
    return ConsentOut.of(view)
