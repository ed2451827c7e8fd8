"""The desktop WebSocket ``/api/v1/gateway/desktop?ticket=…`` (included by the gateway router).

Thin: redeem the one-time ticket (the terminal-ticket endpoint issues it, for any mode),
relay the socket to the replica holding the device's agent if another replica holds it
(broker.gateway.router.entered and peered; that replica records and enforces), else attach
through :mod:`broker.gateway.access` with the desktop channel opened before the attach commits (a
refusal, the broker's or the agent's with its reason, starts nothing and ends the socket
with a JSON error and close code 4403), then hand the socket to the relay.

Before the RFB stream the socket carries one JSON text frame each way: the broker says
``{"type": "ready", "input": …}`` (what the page may offer: keyboard, pointer, clipboard);
the page answers ``{"type": "start"}`` once noVNC listens on the socket. Then only binary
RFB frames (a text frame is a violation).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketDisconnect

from broker.errors import BrokerError, ProviderError
from broker.gateway import access, rfb_service, service
from broker.gateway.rfb_relay import DesktopViewer, DeviceDesktop, open_desktop
from broker.gateway.router import _held, _refuse, entered
from broker.gateway.server import Gateway
from broker.sessions.repository import SessionRecord

router = APIRouter(tags=["agent"])
START_SECONDS = 30.0


def _close(opened: list[DeviceDesktop]) -> None:
    for device in opened:
        device.close()
    opened.clear()


@router.websocket("/gateway/desktop")
async def desktop(ws: WebSocket, ticket: Annotated[str, Query()]) -> None:
    if (entry := await entered(ws, ticket, "desktop")) is not None:
        await serve_desktop(ws, *entry)


async def serve_desktop(ws: WebSocket, gateway: Gateway, grant: access.Ticket) -> None:
    """The desktop socket once its ticket is redeemed (here, or relayed by another replica:
    broker.gateway.peer_router)."""
    opened: list[DeviceDesktop] = []

    async def open_channel(db: AsyncSession, record: SessionRecord) -> None:
        _close(opened)  # a channel of an earlier attempt whose transaction did not commit
        link = await _held(gateway, db, record)
        allowed = rfb_service.may_input(record, grant.mode)
        sid = record.session.id
        opened.append(
            await service.open_channel(
                db,
                record,
                grant.principal.actor(),
                lambda: open_desktop(link.conn, sid, may_input=allowed),
                channel="desktop",
                detail={"mode": grant.mode, "input": allowed},
            )
        )

    try:
        record = await access.attach_when_decided(
            gateway.maker,
            gateway.signals,
            grant,
            with_attach=open_channel,
            waiting=gateway.waiting,
            ready=gateway.granted,
        )
        if not opened:
            raise ProviderError("the screen channel was not opened; open the page again")
        device = opened.pop()
    except BrokerError as exc:
        _close(opened)
        await _refuse(ws, exc)
        return
    allowed = rfb_service.may_input(record, grant.mode)
    viewer = DesktopViewer(
        session_id=record.session.id,
        name=grant.principal.actor().name or "",
        mode=grant.mode,
        may_input=allowed,
        device=device,
        taps=gateway.desktop_taps(record) if grant.mode == "control" else (),
    )
    link = gateway.links.get(record.device.id)
    if link is not None:
        link.desktops.add(viewer)
        link.tell_viewer(record.session.id, viewer.name, grant.mode, present=True)
    # the end user's consent page lists who is on the screen (broker/gateway/attendance.py)
    present = gateway.attendance.enter(
        record.session.id,
        name=grant.principal.name,
        role=grant.principal.role,
        mode=grant.mode,
        via="screen",
    )
    try:
        await ws.send_text(
            json.dumps(
                {"type": "ready", "mode": grant.mode, "input": allowed, "clipboard": allowed}
            )
        )
        start = await asyncio.wait_for(ws.receive(), START_SECONDS)
        if json.loads(start.get("text") or "{}").get("type") != "start":
            device.close()
            await ws.close(code=1000)
            return
        await viewer.serve(ws)
    except (WebSocketDisconnect, RuntimeError, ValueError, TimeoutError):
        device.close()  # the page never started, or left before it did
    finally:
        if link is not None:
            link.desktops.discard(viewer)
            link.tell_viewer(record.session.id, viewer.name, grant.mode, present=False)
        gateway.attendance.leave(record.session.id, present)
        await rfb_service.record_closed(
            gateway.maker,
            record.session.id,
            grant.principal.actor(),
            {
                "mode": grant.mode,
                "reason": viewer.reason or "the viewer left",
                "violation": viewer.violation or None,
                "dropped_input": viewer.filter.stats.dropped_input,
                "removed_encodings": viewer.filter.stats.removed_encodings,
            },
        )
