"""Peering: a technician's socket on any replica reaches the agent through the replica
holding it (docs/DEPLOY.md, "Peering"; docs/ARCHITECTURE.md).

The replica B the technician's terminal, forward or desktop socket landed on redeems its own
one-time ticket. When the device's agent is held by another live replica A
(:func:`broker.replicas.service.holder_of`), B dials A's internal address
(``replicas.address``) at ``/api/v1/gateway/peer/{terminal|forward|desktop}`` and sends a
:class:`Grant` signed with its peering key: from, to (A's id and A's current public key),
the session, the principal (kind and id, read again from the database by A), mode, channel,
port, a short expiry and a nonce. A accepts it only when ``from`` is a registered replica
whose heartbeat is live, the Ed25519 signature checks against that replica's published key,
the grant names A as it is now, has not expired and its nonce was not seen before; A then
proves itself by signing the grant with its own key, which B checks against A's published
key: both ends are authenticated by keys the database pins. Any refusal closes the peer
socket with 4403 and a ``{"error", "detail"}`` frame, and is logged.

Each replica makes its Ed25519 peering key at start, in memory only
(:class:`broker.replicas.service.Membership`), and publishes the public half in
``replicas.peering_key`` with every heartbeat; a restarted replica has a new key, so a grant
made for its predecessor is refused.

After the handshake A serves the socket with the same code as a technician socket of its own
and B relays the frames both ways, passing A's close code and reason back. So recording,
rights enforcement and consent waiting happen on exactly one replica per session: A, the one
holding the agent. B sees the frames but decides nothing.

File transfers are HTTP requests: B sends each on to A's peer route with the grant in the
``X-Peer-Grant`` / ``X-Peer-Signature`` headers (channel ``files``); A answers with its proof
in ``X-Peer-Proof``, which B checks before passing anything on (:meth:`Peering.send_http`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import time
from datetime import timedelta

import httpx
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from broker.auth.principal import Principal
from broker.config import Settings
from broker.db.base import utcnow
from broker.errors import BrokerError, NotAuthenticated, ProviderError
from broker.replicas.models import Replica
from broker.replicas.service import holder_of, public_text
from broker.sessions.models import RemoteSession

log = structlog.get_logger("broker.replicas")

PATH = "/api/v1/gateway/peer/"
CHANNELS = ("terminal", "forward", "desktop")
FILES = "files"  # the channel of a relayed file transfer (HTTP, not a socket)
GRANT_HEADER = "X-Peer-Grant"  # on a relayed file transfer: the grant, base64
SIGNATURE_HEADER = "X-Peer-Signature"
PROOF_HEADER = "X-Peer-Proof"  # the holding replica's answer
GRANT_SECONDS = 30.0  # a grant is good this long after it is made (clocks agree by NTP)
SKEW_SECONDS = 5.0
HANDSHAKE_SECONDS = 10.0
HTTP_SECONDS = 300.0  # a relayed file transfer's longest silence
GRANT_CONTEXT = b"supportbroker peering grant v1\n"
PROOF_CONTEXT = b"supportbroker peering proof v1\n"


class PeeringRefused(NotAuthenticated):
    """A peer socket without a valid grant of a live registered replica (the code of every
    refused credential, ``not_authenticated``: 401)."""


class Relayed(BrokerError):
    """The holding replica's refusal, passed on to the technician as it was given."""

    def __init__(self, detail: str, *, code: str = "provider_error") -> None:
        super().__init__(detail)
        self.code = code


class Grant(BaseModel):
    """What B asks of A, signed by B."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    origin: str = Field(max_length=200)
    target: str = Field(max_length=200)
    target_key: str = Field(max_length=200)
    session_id: str = Field(max_length=100)
    principal_kind: str = Field(pattern="^(user|token)$")
    principal_id: str = Field(max_length=100)
    ip: str | None = Field(default=None, max_length=64)
    mode: str = Field(max_length=20)
    channel: str = Field(max_length=20)
    port: int | None = Field(default=None, gt=0, lt=65536)
    expires: float
    nonce: str = Field(min_length=16, max_length=100)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def _said(body: bytes) -> dict[str, object]:
    """A JSON error body, or nothing."""
    try:
        said = json.loads(body)
    except ValueError:
        return {}
    return said if isinstance(said, dict) else {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _public(replica: Replica) -> Ed25519PublicKey:
    text = replica.peering_key or ""
    try:
        if not text.startswith("ed25519:"):
            raise ValueError("no Ed25519 key")
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text[8:], validate=True))
    except (ValueError, binascii.Error) as exc:
        raise PeeringRefused(f"replica {replica.id} has published no peering key") from exc


def ws_address(address: str) -> str:
    """A replica's internal base URL as a WebSocket URL of the peer endpoint's prefix."""
    base = address.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + PATH
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + PATH
    raise ProviderError(f"a replica's address must be an http(s) URL, not {address!r}")


class Peering:
    """This replica's end of peering: its key, the grants it made and the nonces it saw."""

    def __init__(
        self,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        node: str,
        key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.node = node
        self.key = key or Ed25519PrivateKey.generate()
        self.public = public_text(self.key)
        self._seen: dict[str, float] = {}  # nonce -> its grant's expiry

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.replica_lease_seconds)

    # --- B: the replica the technician's socket reached -------------------------------------

    async def holder(self, session_id: str) -> tuple[str, Replica | None]:
        """The session's device and the *other* live replica holding its agent (None when
        none does: the socket is served here, and refused here if need be)."""
        if self.settings.is_sqlite:  # one process: nobody to peer with
            return "", None
        async with self.maker() as db:
            device_id = await db.scalar(
                select(RemoteSession.device_id).where(RemoteSession.id == session_id)
            )
            if device_id is None:
                return "", None
            node = await holder_of(db, device_id, self.lease)
            if node is None or node == self.node:
                return device_id, None
            return device_id, await db.get(Replica, node)

    def grant(
        self,
        target: Replica,
        *,
        principal: Principal,
        session_id: str,
        mode: str,
        channel: str,
        port: int | None = None,
    ) -> Grant:
        ident = principal.token_id if principal.kind == "token" else principal.user_id
        return Grant(
            origin=self.node,
            target=target.id,
            target_key=target.peering_key or "",
            session_id=session_id,
            principal_kind=principal.kind,
            principal_id=ident or "",
            ip=principal.ip,
            mode=mode,
            channel=channel,
            port=port,
            expires=round(time.time() + GRANT_SECONDS, 3),
            nonce=secrets.token_urlsafe(24),
        )

    def signed(self, grant: Grant) -> tuple[bytes, str]:
        """The grant's bytes and this replica's signature of them (base64)."""
        raw = grant.encode()
        return raw, _b64(self.key.sign(GRANT_CONTEXT + raw))

    async def dial(self, target: Replica, grant: Grant) -> ClientConnection:
        """The peer socket on ``target``, both ends authenticated; raises the refusal."""
        url = ws_address(target.address) + grant.channel
        raw, signature = self.signed(grant)
        try:
            conn = await connect(
                url,
                max_size=None,
                compression=None,
                write_limit=4 << 20,  # large forward frames, not a drain per 32 KiB
                open_timeout=HANDSHAKE_SECONDS,
            )
        except (OSError, InvalidURI, InvalidHandshake, TimeoutError) as exc:
            raise ProviderError(
                f"the broker replica holding the device's agent ({target.id}) cannot be "
                f"reached at {target.address}: {exc}"
            ) from exc
        try:
            await conn.send(
                json.dumps({"type": "grant", "grant": raw.decode(), "signature": signature})
            )
            first = await asyncio.wait_for(conn.recv(), HANDSHAKE_SECONDS)
            self._check_proof(target, raw, first)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, ConnectionClosed | TimeoutError):
                raise ProviderError(
                    f"the broker replica holding the device's agent ({target.id}) closed the "
                    f"peering channel: {exc}"
                ) from exc
            raise
        return conn

    async def send_http(
        self, target: Replica, grant: Grant, request: Request, suffix: str
    ) -> tuple[httpx.AsyncClient, httpx.Response]:
        """``request`` (its method, query and streamed body) sent on to ``target``'s peer
        route ``PATH + suffix`` with the signed grant; the answer, still streaming, once the
        holding replica's proof checks out. The caller closes both."""
        raw, signature = self.signed(grant)
        headers = {GRANT_HEADER: _b64(raw), SIGNATURE_HEADER: signature}
        for name in ("content-type", "content-length"):
            if (value := request.headers.get(name)) is not None:
                headers[name] = value
        url = target.address.rstrip("/") + PATH + suffix
        client = httpx.AsyncClient(timeout=httpx.Timeout(HANDSHAKE_SECONDS, read=HTTP_SECONDS))
        body = request.stream() if request.method in ("PUT", "POST") else None
        try:
            answer = await client.send(
                client.build_request(
                    request.method, url, params=request.query_params, headers=headers, content=body
                ),
                stream=True,
            )
        except httpx.HTTPError as exc:
            await client.aclose()
            raise ProviderError(
                f"the broker replica holding the device's agent ({target.id}) cannot be "
                f"reached at {target.address}: {exc}"
            ) from exc
        try:
            proof = answer.headers.get(PROOF_HEADER)
            if proof is None:  # refused before the grant was accepted: no proof, no trust
                said = _said(await answer.aread())
                if said.get("error") == PeeringRefused.code:
                    raise PeeringRefused(str(said.get("detail", "")))
                raise ProviderError(
                    f"the broker replica holding the device's agent ({target.id}) answered "
                    f"{answer.status_code}: {said.get('detail', '')}"
                )
            self.check_proof(target, raw, proof)
        except BaseException:
            await answer.aclose()
            await client.aclose()
            raise
        return client, answer

    def _check_proof(self, target: Replica, raw: bytes, first: str | bytes) -> None:
        try:
            said = json.loads(first)
        except ValueError:
            said = None
        if isinstance(said, dict) and isinstance(said.get("error"), str):
            raise Relayed(str(said.get("detail", "")), code=said["error"])
        self.check_proof(target, raw, said.get("proof") if isinstance(said, dict) else None)

    def check_proof(self, target: Replica, raw: bytes, proof: object) -> None:
        """Raise unless ``proof`` is ``raw`` signed with ``target``'s published key."""
        try:
            if not isinstance(proof, str):
                raise InvalidSignature
            _public(target).verify(base64.b64decode(proof, validate=True), PROOF_CONTEXT + raw)
        except (InvalidSignature, ValueError, binascii.Error) as exc:
            log.warning("replicas.peer_unproven", replica=target.id)
            raise PeeringRefused(
                f"the broker replica {target.id} did not prove its registered peering key"
            ) from exc

    # --- A: the replica holding the agent ---------------------------------------------------

    async def accept(self, ws: WebSocket, channel: str) -> Grant:
        """Read and check the grant on a peer socket, then prove this replica to the dialler.
        Raises :class:`PeeringRefused`; nothing is served before this returns."""
        try:
            frame = await asyncio.wait_for(ws.receive(), HANDSHAKE_SECONDS)
        except (TimeoutError, WebSocketDisconnect, RuntimeError) as exc:
            raise PeeringRefused("no grant was sent on the peering channel") from exc
        try:
            sent = json.loads(frame.get("text") or "")
            raw, signature = str(sent["grant"]).encode(), str(sent["signature"])
        except (ValueError, TypeError, KeyError) as exc:
            raise PeeringRefused("the peering grant is malformed") from exc
        grant = await self.check(raw, signature, channel)
        await ws.send_text(
            json.dumps({"type": "peered", "replica": self.node, "proof": self.prove(raw)})
        )
        return grant

    async def check(self, raw: bytes, signature: str, channel: str) -> Grant:
        """The grant ``raw`` if a live registered replica signed it (``signature``, base64)
        for this replica as it is now, for ``channel``, unexpired and never used before."""
        try:
            signed = base64.b64decode(signature, validate=True)
            grant = Grant.model_validate_json(raw)
        except (ValueError, binascii.Error, ValidationError) as exc:
            raise PeeringRefused("the peering grant is malformed") from exc
        async with self.maker() as db:
            origin = await db.scalar(
                select(Replica).where(
                    Replica.id == grant.origin, Replica.heartbeat_at > utcnow() - self.lease
                )
            )
        if origin is None:
            raise PeeringRefused(f"{grant.origin!r} is not a registered live broker replica")
        try:
            _public(origin).verify(signed, GRANT_CONTEXT + raw)
        except InvalidSignature as exc:
            raise PeeringRefused(
                f"the grant's signature is not replica {grant.origin}'s registered key"
            ) from exc
        # Authentic from here on: is it for this replica as it is now, unexpired, and new?
        if grant.target != self.node or grant.target_key != self.public:
            raise PeeringRefused(
                f"the grant is for replica {grant.target} as it was, not for this one"
            )
        if grant.channel != channel:
            raise PeeringRefused(f"the grant is for a {grant.channel}, not a {channel}")
        now = time.time()
        if grant.expires <= now:
            raise PeeringRefused("the peering grant has expired")
        if grant.expires > now + GRANT_SECONDS + SKEW_SECONDS:
            raise PeeringRefused("the peering grant is valid for too long")
        self._seen = {n: t for n, t in self._seen.items() if t > now}
        if grant.nonce in self._seen:
            raise PeeringRefused("the peering grant was already used")
        self._seen[grant.nonce] = grant.expires
        return grant

    def prove(self, raw: bytes) -> str:
        """This replica's answer to an accepted grant: the grant signed with its own key."""
        return _b64(self.key.sign(PROOF_CONTEXT + raw))


async def relay(technician: WebSocket, peer: ClientConnection) -> None:
    """Frames both ways, binary and text, until either end closes; the holding replica's
    close code and reason (a 4403 refusal after its JSON frame) reach the technician."""

    async def up() -> None:
        while True:
            frame = await technician.receive()
            if frame["type"] == "websocket.disconnect":
                return
            if (data := frame.get("bytes")) is not None:
                await peer.send(data)
            elif (text := frame.get("text")) is not None:
                await peer.send(text)

    async def down() -> None:
        async for message in peer:
            if isinstance(message, bytes):
                await technician.send_bytes(message)
            else:
                await technician.send_text(message)

    ups = asyncio.create_task(up())
    downs = asyncio.create_task(down())
    try:
        await asyncio.wait((ups, downs), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ups, downs):
            task.cancel()
        for task in (ups, downs):
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, WebSocketDisconnect, RuntimeError
            ):
                await task
    code = peer.close_code
    if code is not None:  # the holding replica closed: say how
        if code in (1005, 1006):
            code, reason = 1011, "the broker replica holding the agent went away"
        else:
            reason = peer.close_reason or ""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await technician.close(code=code, reason=reason)
    await peer.close()
