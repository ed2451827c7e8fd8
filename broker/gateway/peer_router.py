"""The replicas' peer sockets ``/api/v1/gateway/peer/{terminal|forward|desktop}``.

Another replica dials here when a technician's socket reached it and this replica holds the
device's agent (broker.replicas.peering). The grant is checked first (a live registered
replica's signature, for this replica as it is now, unexpired, its nonce unseen) and the
principal it names is read again from the database; then the socket is served by the same
code as a technician's own socket on this replica, which therefore records the session,
enforces its rights and waits for consent. A refusal closes the socket with 4403 and a
``{"error", "detail"}`` frame (the relaying replica hands both to the technician) and is
logged. Not for browsers: HAProxy denies the path from outside (deploy/haproxy.cfg).
"""

from __future__ import annotations

import time

import structlog
from fastapi import APIRouter, WebSocket

from broker.auth.deps import principal_by_id
from broker.errors import BrokerError, ValidationFailed
from broker.gateway import access
from broker.gateway.rfb_router import serve_desktop
from broker.gateway.router import _gateway, _refuse, serve_forward, serve_terminal
from broker.replicas.peering import CHANNELS

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
