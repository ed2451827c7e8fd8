"""The replicas' peer sockets ``/api/v1/gateway/peer/{terminal|forward|desktop}`` and peer
file transfers ``/api/v1/gateway/peer/sessions/{id}/files…``.

Another replica dials here when a technician's socket reached it and this replica holds the
device's agent (broker.replicas.peering). The grant is checked first (a live registered
replica's signature, for this replica as it is now, unexpired, its nonce unseen) and the
principal it names is read again from the database; then the socket is served by the same
code as a technician's own socket on this replica, which therefore records the session,
enforces its rights and waits for consent. A refusal closes the socket with 4403 and a
``{"error", "detail"}`` frame (the relaying replica hands both to the technician) and is
logged. A file transfer carries its grant in headers and gets this replica's proof in one
(``X-Peer-Proof``), on its answer and on any refusal after the grant was accepted; it is
served by the same ``serve_*`` functions as on the files routes. Not for browsers: HAProxy
denies the path from outside (deploy/haproxy.cfg).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.deps import principal_by_id
from broker.auth.principal import Principal
from broker.db.aftercommit import commit
from broker.db.session import DbSession
from broker.errors import BrokerError, ValidationFailed, status_for
from broker.gateway import access
from broker.gateway import files_router as transfers
from broker.gateway.rfb_router import serve_desktop
from broker.gateway.router import _gateway, _refuse, serve_forward, serve_terminal
from broker.replicas.peering import (
    CHANNELS,
    FILES,
    GRANT_HEADER,
    PROOF_HEADER,
    SIGNATURE_HEADER,
    PeeringRefused,
)

log = structlog.get_logger("broker.gateway")

router = APIRouter(tags=["agent"], include_in_schema=False)


@router.websocket("/gateway/peer/{channel}")
async def peer(ws: WebSocket, channel: str) -> None:
    await ws.accept()
    try:
        if channel not in CHANNELS:
            raise ValidationFailed(f"channel must be one of {', '.join(CHANNELS)}")
        gateway = _gateway(ws)
        granted = await gateway.peering.accept(ws, channel)
        async with gateway.maker() as db:
            principal = await principal_by_id(
                db, granted.principal_kind, granted.principal_id, granted.ip
            )
        left = max(0.0, granted.expires - time.time())
        ticket = access.Ticket(principal, granted.session_id, granted.mode, time.monotonic() + left)
    except BrokerError as exc:
        client = ws.client.host if ws.client else None
        log.warning(
            "gateway.peer_refused", channel=channel, peer=client, error=exc.code, detail=exc.detail
        )
        await _refuse(ws, exc)
        return
    log.info(
        "gateway.peer_accepted",
        channel=channel,
        replica=granted.origin,
        session_id=granted.session_id,
    )
    if channel == "terminal":
        await serve_terminal(ws, gateway, ticket)
    elif channel == "forward":
        if granted.port is None:
            await _refuse(ws, ValidationFailed("a forward's grant names its port"))
            return
        await serve_forward(ws, gateway, ticket, granted.port)
    else:
        await serve_desktop(ws, gateway, ticket)


FilePath = Annotated[str, Query(min_length=1, max_length=4096)]


async def _granted(request: Request, db: AsyncSession, session_id: str) -> tuple[Principal, str]:
    """The principal of a relayed file transfer's grant, and this replica's proof."""
    try:
        peering = _gateway(request).peering
        try:
            raw = base64.b64decode(request.headers.get(GRANT_HEADER, ""), validate=True)
        except (ValueError, binascii.Error) as exc:
            raise PeeringRefused("the peering grant is malformed") from exc
        grant = await peering.check(raw, request.headers.get(SIGNATURE_HEADER, ""), FILES)
        if grant.session_id != session_id:
            raise PeeringRefused("the peering grant is for another session")
        principal = await principal_by_id(db, grant.principal_kind, grant.principal_id, grant.ip)
    except BrokerError as exc:
        client = request.client.host if request.client else None
        log.warning(
            "gateway.peer_refused", channel=FILES, peer=client, error=exc.code, detail=exc.detail
        )
        raise
    log.info("gateway.peer_accepted", channel=FILES, replica=grant.origin, session_id=session_id)
    return principal, peering.prove(raw)


async def _served(
    request: Request,
    db: AsyncSession,
    session_id: str,
    serve: Callable[[Principal], Awaitable[Any]],
) -> Response:
    """``serve`` for the grant's principal; its answer or its refusal, with the proof."""
    principal, proof = await _granted(request, db, session_id)
    try:
        found = await serve(principal)
    except BrokerError as exc:  # answered here, not by the app's handler: it needs the proof
        await (commit(db) if exc.keep_changes else db.rollback())
        found = JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=status_for(exc))
    answer = found if isinstance(found, Response) else JSONResponse(jsonable_encoder(found))
    answer.headers[PROOF_HEADER] = proof
    return answer


@router.get("/gateway/peer/sessions/{session_id}/files")
async def peer_list(
    session_id: str,
    request: Request,
    db: DbSession,
    path: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    return await _served(
        request, db, session_id, lambda p: transfers.serve_list(request, db, p, session_id, path)
    )


@router.put("/gateway/peer/sessions/{session_id}/files/content")
async def peer_upload(session_id: str, path: FilePath, request: Request, db: DbSession) -> Response:
    return await _served(
        request, db, session_id, lambda p: transfers.serve_upload(request, db, p, session_id, path)
    )


@router.get("/gateway/peer/sessions/{session_id}/files/content")
async def peer_download(
    session_id: str, path: FilePath, request: Request, db: DbSession
) -> Response:
    return await _served(
        request,
        db,
        session_id,
        lambda p: transfers.serve_download(request, db, p, session_id, path),
    )


@router.get("/gateway/peer/sessions/{session_id}/files/transfers/{transfer_id}")
async def peer_outcome(
    session_id: str, transfer_id: str, request: Request, db: DbSession
) -> Response:
    return await _served(
        request,
        db,
        session_id,
        lambda p: transfers.serve_outcome(request, db, p, session_id, transfer_id),
    )
