"""HTTP and WebSocket endpoints of the built-in agent provider (include under ``/api/v1``).

Thin: parse, authorise through a dependency, call one service function; the terminal
WebSocket hands its bytes to the relay. Both sockets open their channel to the agent before
the attach commits (:func:`broker.gateway.service.open_channel`): a refusal, the broker's or
the agent's, starts nothing and ends the socket with its JSON error and close code 4403.

With several replicas (docs/DEPLOY.md), a technician socket whose device's agent another
replica holds is relayed there once its ticket is redeemed (:func:`peered`,
broker.replicas.peering); that replica runs the same ``serve_*`` code on it, so recording,
rights enforcement and the wait for consent happen on the replica holding the agent only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncssh
import structlog
from fastapi import (
    APIRouter,
    Depends,
    Path,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.deps import require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.errors import BrokerError, ProviderError
from broker.gateway import access, dist, replay, service
from broker.gateway.link import AgentLink
from broker.gateway.relay import ShellRelay, Viewer, open_forward, open_shell
from broker.gateway.server import Gateway
from broker.providers.offers import recording_of
from broker.replicas.peering import relay as relay_to_peer
from broker.sessions.repository import SessionRecord
from broker.types import CleanText

log = structlog.get_logger("broker.gateway")

router = APIRouter(tags=["agent"])


class TokenCreate(BaseModel):
    # Control characters refused like every name (PostgreSQL refuses NUL in text: a 500).
    group: CleanText = Field(min_length=1, max_length=100)
    hours: float = Field(default=24.0, gt=0, le=168)


class TicketCreate(BaseModel):
    mode: str = "control"


class ReplayRequest(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]
    recording_id: str | None = Field(default=None, max_length=100)


def _gateway(request: Request | WebSocket) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise ProviderError("the SSH gateway is not running in this broker process")
    return gateway


@router.get("/agent/dist/{filename}", response_class=Response)
async def agent_wheel(filename: Annotated[str, Path(max_length=200)]) -> Response:
    """The agent's own wheel for ``pip install`` on a device (public: it holds no secret and
    a device has no credential before it enrolls; see :mod:`broker.gateway.dist`)."""
    wheel = dist.wheel_named(filename)
    return Response(
        wheel.content,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{wheel.filename}"',
            "ETag": f'"{wheel.sha256}"',
            "Cache-Control": "public, max-age=300",
        },
    )


@router.post("/agent/enrollment-tokens", status_code=201)
async def create_token(
    body: TokenCreate,
    request: Request,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.devices_write))],
) -> dict[str, Any]:
    issued = await service.create_enrollment_token(
        db, group=body.group, actor=principal.actor(), hours=body.hours
    )
    settings = request.app.state.settings
    gateway = getattr(request.app.state, "gateway", None)
    return {
        "token": issued.token,
        "token_id": issued.token_id,
        "group": issued.group,
        "expires_at": issued.expires_at,
        "gateway": f"{settings.gateway_host}:{gateway.port if gateway else settings.gateway_port}",
        "fingerprint": gateway.fingerprint if gateway else None,
    }


@router.post("/gateway/sessions/{session_id}/terminal-ticket")
async def terminal_ticket(
    session_id: str,
    body: TicketCreate,
    request: Request,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.sessions_read))],
) -> dict[str, Any]:
    # A technician may open the terminal before the user answers: the socket waits.
    record = await access.authorize(db, principal, session_id, body.mode, pending=True)
    ticket = _gateway(request).tickets.issue(principal, session_id, body.mode)
    s = record.session
    return {
        "ticket": ticket,
        "expires_in": access.TICKET_SECONDS,
        "terminal": "/api/v1/gateway/terminal",
        "forward": "/api/v1/gateway/forward",
        "desktop": "/api/v1/gateway/desktop",
        # What the banner says ("connected to pc-042 for HD-4711 — recorded").
        "session": {
            "device": record.device.name,
            "ticket": record.ticket.external_id,
            "recorded": "shell" in recording_of(s.provider, s.capabilities).content,
        },
    }


@router.get("/sessions/{session_id}/recordings")
async def recordings(
    session_id: str,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.audit_read))],
) -> dict[str, Any]:
    found = await replay.recordings_of(db, principal, session_id)
    return {"session_id": session_id, "recordings": [r.as_dict() for r in found]}


@router.post(
    "/gateway/sessions/{session_id}/replay",
    response_class=Response,
    responses={200: {"content": {"application/x-asciicast": {}, "application/json": {}}}},
)
async def replay_recording(
    session_id: str,
    body: ReplayRequest,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.audit_read))],
) -> Response:
    """The asciicast v2 text (a desktop recording: the player's JSON, ``X-Recording-Format:
    rfb``); ``X-Recording-Complete`` says whether it is whole and sealed."""
    cast = await replay.replay(
        db, principal, session_id, reason=body.reason, recording_id=body.recording_id
    )
    headers = {
        "X-Recording-Id": cast.recording_id,
        "X-Recording-Complete": "true" if cast.complete else "false",
        "X-Recording-Chunks": str(cast.chunks),
        "X-Recording-Format": cast.format,
    }
    if cast.problem:
        headers["X-Recording-Problem"] = cast.problem
    media = "application/json" if cast.format == "rfb" else "application/x-asciicast"
    return Response(cast.text, media_type=media, headers=headers)


def _link(gateway: Gateway, record: SessionRecord) -> AgentLink:
    link = gateway.links.get(record.device.id)
    if link is None:
        raise ProviderError("the device's agent is not connected to this broker")
    return link


async def _held(gateway: Gateway, db: AsyncSession, record: SessionRecord) -> AgentLink:
    """The device's link on this replica, or a refusal that says where the agent is."""
    link = gateway.links.get(record.device.id)
    if link is None:
        raise await gateway.absent(db, record.device.id)
    return link


def _tell_device(
    gateway: Gateway, record: SessionRecord, grant: access.Ticket, *, present: bool
) -> None:
    """The person at the device sees an expert or a supervisor come and go."""
    link = gateway.links.get(record.device.id)
    if link is not None:
        who = grant.principal.actor().name or ""
        link.tell_viewer(record.session.id, who, grant.mode, present=present)


async def _refuse(ws: WebSocket, exc: BrokerError) -> None:
    """The error as one JSON text frame, then close 4403 with the detail as the reason.
    A client that has already gone (it gave up waiting for consent) is not told: there is
    nobody to tell, and the refusal is no server error."""
    reason = exc.detail.encode()[:120].decode(errors="ignore")  # a close reason: <= 123 bytes
    try:
        await ws.send_text(json.dumps({"error": exc.code, "detail": exc.detail}))
        await ws.close(code=4403, reason=reason)
    except (WebSocketDisconnect, RuntimeError):
        log.info("gateway.refusal_unheard", error=exc.code, detail=exc.detail)


def _close_all(opened: list[asyncssh.SSHClientProcess[bytes]]) -> None:
    for channel in opened:
        channel.close()
    opened.clear()


async def _reopen(
    opened: list[asyncssh.SSHClientProcess[bytes]],
    db: AsyncSession,
    record: SessionRecord,
    grant: access.Ticket,
    opener: Callable[[], Awaitable[asyncssh.SSHClientProcess[bytes]]],
    *,
    channel: str,
    port: int | None = None,
) -> None:
    """Open the socket's channel through the broker's and the agent's checks, in ``db``'s
    transaction; a channel of an earlier attempt whose transaction did not commit is closed."""
    _close_all(opened)
    actor = grant.principal.actor()
    opened.append(await service.open_channel(db, record, actor, opener, channel=channel, port=port))


async def _relay(
    gateway: Gateway, record: SessionRecord, opened: list[asyncssh.SSHClientProcess[bytes]]
) -> ShellRelay:
    """The session's running shell relay, or a new one on the channel just opened (recorded
    from its first byte: output waits in the channel until the relay reads it)."""
    link = _link(gateway, record)
    relay = link.relays.get(record.session.id)
    if relay is not None and not relay.closed.is_set():
        _close_all(opened)  # another socket started the shell meanwhile: join it
        return relay
    if not opened:
        raise ProviderError("the session's shell ended; open the terminal again")
    recorder = await gateway.open_recorder(record)
    relay = ShellRelay(
        record.session.id,
        opened.pop(),
        recorder,
        record_input=link.record_input,
        on_failure=lambda why, rid: gateway.fail_session(record.session.id, why, rid),
    )
    link.relays[record.session.id] = relay
    return relay


async def peered(
    ws: WebSocket, gateway: Gateway, grant: access.Ticket, channel: str, port: int | None = None
) -> bool:
    """Relay the socket to the replica holding the session's device's agent when another
    replica holds it (broker.replicas.peering): that replica serves it, records it and
    enforces its rights. False: it is served here (and refused here if need be)."""
    device_id, holder = await gateway.peering.holder(grant.session_id)
    if holder is None or device_id in gateway.links:
        return False
    signed = gateway.peering.grant(
        holder,
        principal=grant.principal,
        session_id=grant.session_id,
        mode=grant.mode,
        channel=channel,
        port=port,
    )
    try:
        conn = await gateway.peering.dial(holder, signed)
    except BrokerError as exc:
        log.warning("gateway.peer_failed", replica=holder.id, error=exc.code, detail=exc.detail)
        raise
    log.info("gateway.peered", session_id=grant.session_id, replica=holder.id, channel=channel)
    await relay_to_peer(ws, conn)
    return True


async def entered(
    ws: WebSocket, ticket: str, channel: str, port: int | None = None
) -> tuple[Gateway, access.Ticket] | None:
    """Accept a socket and redeem its ticket: the gateway and grant to serve it here, or None
    when it was refused or relayed to the replica holding the agent (:func:`peered`)."""
    await ws.accept()
    try:
        gateway = _gateway(ws)
        grant = gateway.tickets.redeem(ticket)
        if await peered(ws, gateway, grant, channel, port):
            return None
    except BrokerError as exc:
        await _refuse(ws, exc)
        return None
    return gateway, grant


@router.websocket("/gateway/terminal")
async def terminal(ws: WebSocket, ticket: Annotated[str, Query()]) -> None:
    if (entry := await entered(ws, ticket, "terminal")) is not None:
        await serve_terminal(ws, *entry)


async def serve_terminal(ws: WebSocket, gateway: Gateway, grant: access.Ticket) -> None:
    """The terminal socket once its ticket is redeemed (here, or on the replica that relays
    it: broker.gateway.peer_router)."""
    opened: list[asyncssh.SSHClientProcess[bytes]] = []

    async def open_channel(db: AsyncSession, record: SessionRecord) -> None:
        # Before the attach commits, as for a forward: a shell the agent refuses leaves the
        # session as it was (no start, no recording), with the refusal sealed.
        link = await _held(gateway, db, record)
        relay = link.relays.get(record.session.id)
        if relay is not None and not relay.closed.is_set():
            _close_all(opened)
            return  # the session's shell is running: this socket joins it
        sid = record.session.id
        await _reopen(
            opened, db, record, grant, lambda: open_shell(link.conn, sid), channel="shell"
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
        relay = await _relay(gateway, record, opened)
    except BrokerError as exc:
        _close_all(opened)
        await _refuse(ws, exc)
        return
    viewer = Viewer(name=record.technician.display_name, mode=grant.mode)
    relay.attach(viewer)
    _tell_device(gateway, record, grant, present=True)
    # the end user's consent page lists who is on the terminal (broker/gateway/attendance.py)
    present = gateway.attendance.enter(
        record.session.id,
        name=grant.principal.name,
        role=grant.principal.role,
        mode=grant.mode,
        via="terminal",
    )

    async def downstream() -> None:
        while (data := await viewer.queue.get()) is not None:
            await ws.send_bytes(data)
        # Why the shell ended ("revoked by the end user", "shell exited"), for the banner.
        reason = relay.reason.encode()[:120].decode(errors="ignore")
        await ws.close(code=1000, reason=reason)

    down = asyncio.create_task(downstream())
    try:
        while True:
            frame = await ws.receive()
            if frame.get("type") == "websocket.disconnect":
                break
            if frame.get("bytes"):
                await relay.send(viewer, frame["bytes"])
            elif frame.get("text"):
                msg = json.loads(frame["text"])
                if msg.get("type") == "resize":
                    relay.resize(int(msg.get("cols", 0)), int(msg.get("rows", 0)))
                elif msg.get("type") == "input":
                    await relay.send(viewer, str(msg.get("data", "")).encode())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        relay.detach(viewer)
        _tell_device(gateway, record, grant, present=False)
        gateway.attendance.leave(record.session.id, present)
        down.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await down


@router.websocket("/gateway/forward")
async def forward(
    ws: WebSocket, ticket: Annotated[str, Query()], port: Annotated[int, Query(gt=0, lt=65536)]
) -> None:
    if (entry := await entered(ws, ticket, "forward", port)) is not None:
        await serve_forward(ws, *entry, port)


async def serve_forward(ws: WebSocket, gateway: Gateway, grant: access.Ticket, port: int) -> None:
    """The forward socket once its ticket is redeemed (here, or relayed by another replica)."""
    opened: list[asyncssh.SSHClientProcess[bytes]] = []

    async def open_channel(db: AsyncSession, record: SessionRecord) -> None:
        # Before the attach commits: a refusal (the broker's rules or the agent's) leaves no
        # start and seals session.channel_refused; an opened forward's audit event shares the
        # attach's commit (one fsync less).
        link = await _held(gateway, db, record)
        sid = record.session.id
        await _reopen(
            opened,
            db,
            record,
            grant,
            lambda: open_forward(link.conn, sid, port),
            channel="forward",
            port=port,
        )

    try:
        if grant.mode != "control":
            raise ProviderError("only the session's technician opens port forwards")
        await access.attach_when_decided(
            gateway.maker,
            gateway.signals,
            grant,
            with_attach=open_channel,
            waiting=gateway.waiting,
            ready=gateway.granted,
        )
        process = opened[0]
    except BrokerError as exc:
        _close_all(opened)
        await _refuse(ws, exc)
        return

    async def downstream() -> None:
        while data := await process.stdout.read(262144):
            await ws.send_bytes(data)
        await ws.close(code=1000)

    down = asyncio.create_task(downstream())
    try:
        while True:
            frame = await ws.receive()
            if frame.get("type") == "websocket.disconnect":
                break
            if frame.get("bytes"):
                process.stdin.write(frame["bytes"])
                await process.stdin.drain()
    except (WebSocketDisconnect, RuntimeError, asyncssh.Error):
        pass
    finally:
        process.close()
        down.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await down


def _include_desktop() -> None:
    """The desktop socket, the file transfers and the replicas' peer sockets live in their
    own modules; they share this router's prefix."""
    from broker.gateway.files_router import router as files_router
    from broker.gateway.peer_router import router as peer_router
    from broker.gateway.rfb_router import router as desktop_router

    router.include_router(desktop_router)
    router.include_router(files_router)
    router.include_router(peer_router)


_include_desktop()
