"""HTTP endpoints of file transfer through the broker (included under ``/api/v1``).

Thin: authorise, plan the transfer in the request's transaction and commit it (a first use
starts the session), then stream outside any transaction (on SQLite an open one holds the
write lock the sealing needs). Only the session's technician lists, uploads and downloads;
an expert or a supervisor watching gets 403 (they see each transfer in the session's
events). The upload body is not held by the broker's body limit: the group's size limit
applies instead, while it streams.

With several replicas, a transfer whose device's agent another replica holds is sent on to
it (broker.replicas.peering; the ``serve_*`` functions run there, behind
broker.gateway.peer_router): that replica checks the rights, moves the bytes and seals the
outcome; this one only streams both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession
from starlette import types

from broker.auth.deps import require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.aftercommit import commit
from broker.db.session import DbSession
from broker.errors import BrokerError, ProviderError
from broker.gateway import files, kept
from broker.gateway.link import AgentLink
from broker.gateway.server import Gateway
from broker.replicas.peering import FILES

# What a relayed transfer's answer keeps of the holding replica's headers.
PASSED_ON = frozenset({"content-type", "content-disposition", "x-transfer-id", "x-file-size"})

router = APIRouter(tags=["agent"])
Path = Annotated[str, Query(min_length=1, max_length=4096)]
OUTCOME_SECONDS = 15.0  # how long the outcome of a just-streamed download may be waited for


def _gateway(request: Request) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise ProviderError("the SSH gateway is not running in this broker process")
    return gateway


async def _ready(
    request: Request, db: DbSession, principal: Principal, session_id: str
) -> tuple[Gateway, AgentLink, files.Plan]:
    gateway = _gateway(request)
    plan = await files.plan(db, principal, session_id, gateway.settings.files_max_bytes)
    await commit(db)  # the session's start (if this is its first use) before any byte moves
    link = gateway.links.get(plan.device_id)
    if link is None:
        raise await gateway.absent(db, plan.device_id)
    await link.granted(session_id)  # a channel opened before the agent holds it is refused
    return gateway, link, plan


async def _relayed(
    request: Request, principal: Principal, session_id: str, suffix: str
) -> StreamingResponse | None:
    """The request served by the replica holding the session's device's agent, when another
    replica holds it (broker.replicas.peering): that one checks the rights, moves the bytes
    and seals the outcome; this one streams both ways. None: served here."""
    gateway = _gateway(request)
    device_id, holder = await gateway.peering.holder(session_id)
    if holder is None or device_id in gateway.links:
        return None
    grant = gateway.peering.grant(
        holder, principal=principal, session_id=session_id, mode="control", channel=FILES
    )
    suffix = f"sessions/{session_id}/files{suffix}"
    client, answer = await gateway.peering.send_http(holder, grant, request, suffix)
    headers = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_ON}

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:  # cut short there: cut short here (no final chunk)
            raise ProviderError("the broker replica holding the agent broke off") from exc
        finally:
            await answer.aclose()
            await client.aclose()

    return _CutOnFailure(chunks(), status_code=answer.status_code, headers=headers)


@router.get("/gateway/sessions/{session_id}/files", response_model=dict[str, Any])
async def list_files(
    session_id: str,
    request: Request,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.sessions_write))],
    path: Annotated[str | None, Query(max_length=4096)] = None,
) -> dict[str, Any] | Response:
    """The allowed folders (no ``path``) or the entries of one of them."""
    if (relayed := await _relayed(request, principal, session_id, "")) is not None:
        return relayed
    return await serve_list(request, db, principal, session_id, path)


async def serve_list(
    request: Request, db: AsyncSession, principal: Principal, session_id: str, path: str | None
) -> dict[str, Any]:
    _, link, plan = await _ready(request, db, principal, session_id)
    return await files.listing(link, plan, path)


@router.put("/gateway/sessions/{session_id}/files/content", response_model=dict[str, Any])
async def upload(
    session_id: str,
    path: Path,
    request: Request,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.sessions_write))],
) -> dict[str, Any] | Response:
    """The body, streamed to ``path`` on the device; the sealed outcome with both hashes."""
    if (relayed := await _relayed(request, principal, session_id, "/content")) is not None:
        return relayed
    return await serve_upload(request, db, principal, session_id, path)


async def serve_upload(
    request: Request, db: AsyncSession, principal: Principal, session_id: str, path: str
) -> dict[str, Any]:
    gateway, link, plan = await _ready(request, db, principal, session_id)
    length = request.headers.get("content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    outcome = await files.upload(gateway.maker, link, plan, path, request.stream(), declared)
    return outcome.as_dict()


@router.get(
    "/gateway/sessions/{session_id}/files/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download(
    session_id: str,
    path: Path,
    request: Request,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.sessions_write))],
) -> StreamingResponse:
    """The file's bytes as they come from the device. Keep them only once
    ``/files/transfers/{X-Transfer-Id}`` says ``ok``: the hashes are compared at the end."""
    if (relayed := await _relayed(request, principal, session_id, "/content")) is not None:
        return relayed
    return await serve_download(request, db, principal, session_id, path)


async def serve_download(
    request: Request, db: AsyncSession, principal: Principal, session_id: str, path: str
) -> StreamingResponse:
    gateway, link, plan = await _ready(request, db, principal, session_id)
    found = await files.open_download(gateway.maker, link, plan, path, gateway.transfers)
    headers = {
        "X-Transfer-Id": found.outcome.transfer_id,
        "X-File-Size": str(found.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{_quoted(found.outcome.name)}",
    }
    return _CutOnFailure(found.chunks(), media_type="application/octet-stream", headers=headers)


@router.get(
    "/gateway/sessions/{session_id}/files/transfers/{transfer_id}", response_model=dict[str, Any]
)
async def transfer_outcome(
    session_id: str,
    transfer_id: str,
    request: Request,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.sessions_write))],
) -> dict[str, Any] | Response:
    """The sealed outcome of a download this broker (or the replica holding the agent, which
    streamed it) streamed; waits for its seal."""
    suffix = f"/transfers/{transfer_id}"
    if (relayed := await _relayed(request, principal, session_id, suffix)) is not None:
        return relayed
    return await serve_outcome(request, db, principal, session_id, transfer_id)


async def serve_outcome(
    request: Request, db: AsyncSession, principal: Principal, session_id: str, transfer_id: str
) -> dict[str, Any]:
    await files.plan(db, principal, session_id, 1)  # the same checks as the transfer
    await commit(db)
    outcome = await _gateway(request).transfers.wait(session_id, transfer_id, OUTCOME_SECONDS)
    return outcome.as_dict()


class KeptRequest(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]


@router.post(
    "/gateway/sessions/{session_id}/files/kept/{transfer_id}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def kept_file(
    session_id: str,
    transfer_id: Annotated[str, FastPath(max_length=64)],
    body: KeptRequest,
    db: DbSession,
    principal: Annotated[Principal, Depends(require(Scope.audit_read))],
) -> Response:
    """An auditor downloads the file a group kept, with a reason (sealed before it leaves)."""
    name, content = await kept.kept_file(db, principal, session_id, transfer_id, reason=body.reason)
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{_quoted(name)}"}
    return Response(content, media_type="application/octet-stream", headers=headers)


class _CutOnFailure(StreamingResponse):
    """A stream that, failing after its headers went out (a hash mismatch is known only after
    the last byte), ends without its final chunk: the client sees a broken transfer, never a
    whole-looking file. The failure is sealed by then; raising it on would only have the
    server log a traceback for an outcome that is already on record. A client that goes away
    stops the reading from the device (the server's sends would silently go nowhere)."""

    async def __call__(self, scope: types.Scope, receive: types.Receive, send: types.Send) -> None:
        chunks = self.body_iterator
        gone = asyncio.Event()  # the client went away: stop reading from the device

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        await send(
            {"type": "http.response.start", "status": self.status_code,
             "headers": self.raw_headers}
        )  # fmt: skip
        try:
            async for chunk in chunks:
                if gone.is_set():
                    return  # closing the stream seals the download as interrupted
                data = chunk.encode() if isinstance(chunk, str) else chunk
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except BrokerError:
            return
        finally:
            watcher.cancel()
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _quoted(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
