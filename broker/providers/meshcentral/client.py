"""A small async client for MeshCentral's control WebSocket (``/control.ashx``).

One connection, opened lazily and re-opened when it drops or when the event loop changed.
Requests carry a ``responseid``; a reply matches by that id or, for commands whose success
reply does not echo it (``events``, ``deviceShares``), by action plus a predicate.
Commands that are not idempotent are never re-sent after the connection dropped mid-flight:
the caller gets a ``ProviderError`` saying the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from broker.errors import ProviderError
from broker.providers.meshcentral.cookie import mint_login_cookie
from broker.providers.meshcentral.settings import MeshCentralSettings

log = structlog.get_logger("broker.providers.meshcentral")

Message = dict[str, Any]
Predicate = Callable[[Message], bool]


class ConnectionLostError(ProviderError):
    """The control connection dropped while a request was in flight."""


class NotSentError(ConnectionLostError):
    """The connection was found dead before the command left: safe to send again."""


class RequestTimeoutError(ProviderError):
    """No reply in time: the command may or may not have taken effect."""


@dataclass
class _Waiter:
    responseid: str
    action: str | None
    predicate: Predicate | None
    future: asyncio.Future[Message] = field(repr=False)
    conn: object = field(default=None, repr=False)  # the connection the request went out on

    def matches(self, msg: Message) -> bool:
        if msg.get("responseid") == self.responseid or msg.get("tag") == self.responseid:
            return True
        if self.action is None or msg.get("action") != self.action:
            return False
        if "responseid" in msg:  # a reply to someone else's request
            return False
        return self.predicate is None or self.predicate(msg)


class MeshControl:
    """The control channel; use ``request`` for round trips and ``send`` for one-way commands."""

    def __init__(self, settings: MeshCentralSettings) -> None:
        self.settings = settings
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._waiters: list[_Waiter] = []
        self._ids = itertools.count(1)
        self.serverinfo: Message = {}
        self.userinfo: Message = {}
        self.listeners: list[Callable[[Message], None]] = []

    # -- connection -------------------------------------------------------------------------

    def _auth(self) -> tuple[str, dict[str, str]]:
        url = self.settings.control_url
        key = self.settings.login_key
        if key is not None:
            cookie = mint_login_cookie(
                bytes.fromhex(key.get_secret_value()),
                self.settings.username,
                domain=self.settings.domain,
            )
            return f"{url}?auth={cookie}", {}
        assert self.settings.password is not None  # settings require one credential
        parts = [self.settings.username, self.settings.password.get_secret_value()]
        value = ",".join(base64.b64encode(p.encode()).decode() for p in parts)
        return url, {"x-meshauth": value}

    def _forget_foreign_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A connection made on another (finished) loop cannot be used or closed here.
            self._ws, self._reader, self._waiters = None, None, []
            self._lock = asyncio.Lock()
            self._loop = loop

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    async def connect(self) -> None:
        self._forget_foreign_loop()
        assert self._lock is not None
        async with self._lock:
            if self.connected:
                return
            await self._open()

    async def _open(self) -> None:
        url, headers = self._auth()
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self.settings.connect_timeout,
                max_size=32 * 1024 * 1024,
                ping_interval=20,
                close_timeout=min(2.0, self.settings.connect_timeout),
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ProviderError(
                f"MeshCentral at {self.settings.url} is not reachable: {type(exc).__name__}"
            ) from exc
        try:
            first = await self._first_message(ws)
        except BaseException:
            await ws.close()
            raise
        if first.get("action") == "close":
            await ws.close()
            raise ProviderError(
                f"MeshCentral refused the broker's login ({first.get('cause')}: "
                f"{first.get('msg')}); check the account and its login key or password"
            )
        self.serverinfo = first.get("serverinfo", {})
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name="meshcentral-reader")
        log.info("meshcentral.connected", url=self.settings.url, user=self.settings.username)

    async def _first_message(self, ws: ClientConnection) -> Message:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("action") in ("serverinfo", "close"):
                        return dict(msg)
        except TimeoutError as exc:
            raise ProviderError("MeshCentral did not greet the broker (no serverinfo)") from exc
        except ConnectionClosed as exc:
            raise ProviderError(
                "MeshCentral closed the control connection at login; check the credentials"
            ) from exc

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    self._dispatch(msg)
        except ConnectionClosed:
            pass
        finally:
            if self._ws is ws:
                self._ws = None
            lost = [w for w in self._waiters if w.conn is ws and not w.future.done()]
            self._waiters = [w for w in self._waiters if w not in lost]
            for waiter in lost:
                waiter.future.set_exception(
                    ConnectionLostError("MeshCentral control connection lost; outcome unknown")
                )

    def _dispatch(self, msg: Message) -> None:
        if msg.get("action") == "userinfo":
            self.userinfo = msg.get("userinfo", {})
        for waiter in list(self._waiters):
            if not waiter.future.done() and waiter.matches(msg):
                waiter.future.set_result(msg)
                self._waiters.remove(waiter)
                return
        for listener in self.listeners:
            listener(msg)

    async def aclose(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - called outside a loop
            return
        ws, reader = self._ws, self._reader
        self._ws, self._reader = None, None
        if ws is None or self._loop is not loop:
            return
        await ws.close()
        if reader is not None:
            await reader

    # -- requests ---------------------------------------------------------------------------

    async def send(self, command: Message) -> None:
        """Send a command that has no reply (``setDeviceEvent``)."""
        await self.connect()
        try:
            assert self._ws is not None
            await self._ws.send(json.dumps(command))
        except ConnectionClosed as exc:
            raise ConnectionLostError(
                f"MeshCentral connection lost sending {command['action']}"
            ) from exc

    async def request(
        self,
        command: Message,
        *,
        reply_action: str | None = None,
        predicate: Predicate | None = None,
        idempotent: bool = False,
        wait_seconds: float | None = None,
    ) -> Message:
        """Send ``command`` and wait for its reply; idempotent ones are retried once on loss."""
        attempts = 2 if idempotent else 1
        for attempt in range(2):
            try:
                return await self._request_once(command, reply_action, predicate, wait_seconds)
            except NotSentError:
                if attempt == 1:
                    raise
                log.info("meshcentral.reconnect", action=command.get("action"))
                continue
            except ConnectionLostError:
                if attempt + 1 >= attempts:
                    raise
                log.info("meshcentral.retry", action=command.get("action"))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request_once(
        self,
        command: Message,
        reply_action: str | None,
        predicate: Predicate | None,
        wait_seconds: float | None,
    ) -> Message:
        await self.connect()
        rid = f"sb{next(self._ids)}"
        loop = asyncio.get_running_loop()
        waiter = _Waiter(rid, reply_action, predicate, loop.create_future(), self._ws)
        self._waiters.append(waiter)
        payload = {**command, "responseid": rid}
        if command.get("action") == "events":
            payload["tag"] = rid  # the events reply echoes tag, not responseid
        wait = wait_seconds or self.settings.request_timeout
        try:
            try:
                assert self._ws is not None
                await self._ws.send(json.dumps(payload))
            except ConnectionClosed as exc:
                self._ws = None
                raise NotSentError(
                    f"MeshCentral connection was closed; {command['action']} not sent"
                ) from exc
            return await asyncio.wait_for(waiter.future, wait)
        except ConnectionClosed as exc:
            raise ConnectionLostError(
                f"MeshCentral connection lost during {command['action']}"
            ) from exc
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"MeshCentral did not answer {command['action']} within {wait:g}s"
            ) from exc
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
