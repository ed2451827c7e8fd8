"""A minimal in-process WebSocket client: drives the ASGI app on the test's own event loop.

The gateway's WebSocket endpoints accept, then either relay or send one JSON error
(``{"error", "detail"}``) and close with 4403. The matrix reads that error's code and maps it
to the HTTP status the same error gets on every other route (``broker.errors.status_for``), so a
WebSocket cell is asserted like any other cell.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from broker.errors import BrokerError, status_for


def _error_statuses() -> dict[str, int]:
    found: dict[str, int] = {}
    pending: list[type[BrokerError]] = [BrokerError]
    while pending:
        cls = pending.pop()
        found[cls.code] = status_for(cls("probe"))
        pending.extend(cls.__subclasses__())
    return found


@dataclass
class WsOutcome:
    accepted: bool = False
    close_code: int | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def error(self) -> dict[str, Any] | None:
        for text in self.texts:
            body = json.loads(text)
            if isinstance(body, dict) and "error" in body:
                return body
        return None

    @property
    def status(self) -> int:
        """The HTTP status of the error the endpoint sent (0: none), or 1008's 422."""
        if self.error is not None:
            # Read when asked: every module's errors are imported by then (the app is built).
            return _error_statuses().get(str(self.error["error"]), 400)
        if self.close_code == 1008:  # FastAPI: request validation failed before accept
            return 422
        return 0


async def ws_call(
    app: Any,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    client: tuple[str, int] = ("198.51.100.99", 40000),
    *,
    first: str | None = None,
) -> WsOutcome:
    """Connect (sending ``first`` as a text frame, if given), read until the server closes
    (or sends its first binary frame), disconnect."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    if first is not None:
        await inbox.put({"type": "websocket.receive", "text": first})
    outcome = WsOutcome()
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            outcome.accepted = True
        elif kind == "websocket.send":
            if message.get("text") is not None:
                outcome.texts.append(message["text"])
            else:
                done.set()
        elif kind == "websocket.close":
            outcome.close_code = message.get("code", 1000)
            done.set()

    query = urlencode(params)
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"broker.test")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": client,
        "server": ("broker.test", 80),
        "subprotocols": [],
        "state": {},
    }
    task = asyncio.create_task(app(scope, receive, send))
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait({task, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    try:
        await asyncio.wait_for(task, timeout=15)
    finally:
        waiter.cancel()
    return outcome
