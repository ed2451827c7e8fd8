"""A desk's fake served over real HTTP on loopback, for a broker running in another process.

The fake's handler (the same one the in-process tests use through ``httpx.MockTransport``)
answers behind uvicorn in a thread of the test process. ``hold`` picks requests to stall
after the fake has handled them (the desk has stored the comment, its answer has not left
yet): the moment to kill the broker in the middle of a delivery.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.connectors.fakes import FakeBase


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveFake:
    fake: FakeBase
    hold: Callable[[httpx.Request], bool]
    port: int = field(default_factory=free_port)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        foreign = httpx.Request(
            request.method, str(request.url), headers=list(request.headers.items()), content=body
        )
        answer = self.fake._handle(foreign)
        if self.hold(foreign):
            self.held.set()
            await asyncio.to_thread(self.release.wait, 120)
        return Response(
            answer.content, status_code=answer.status_code, headers=dict(answer.headers)
        )

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)])


@contextmanager
def serving(live: LiveFake) -> Iterator[LiveFake]:
    config = uvicorn.Config(
        live.app(),
        host="127.0.0.1",
        port=live.port,
        log_level="warning",
        lifespan="off",
        log_config=None,  # uvicorn's own config would stop its loggers reaching the root
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="desk-fake", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the desk fake did not start")
        time.sleep(0.05)
    try:
        yield live
    finally:
        live.release.set()
        server.should_exit = True
        thread.join(timeout=30)
