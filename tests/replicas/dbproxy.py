"""A TCP relay between one replica and PostgreSQL that a test can cut and restore.

Cut, it behaves like a dropped route seen from the replica: its open connections stop
answering (nothing is read from them, nothing comes back) and new ones are accepted but
never answered, so the replica's database calls hang instead of failing. The side towards
PostgreSQL is closed at once, as the server's keepalives would find in production
(docs/DEPLOY.md, "Failures"): the server rolls back whatever the replica had open and its
locks go with it. Restored, the held connections are reset (the replica's pool and its
listener reconnect) and new ones are relayed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(eq=False)  # kept in a set by identity
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class DbProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut_off = False
        self._pairs: set[_Pair] = set()
        self._held: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accepted, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            self._held.append(writer)  # accepted, never read, never answered
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        pair.pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, pair)),
            asyncio.ensure_future(self._pump(up_reader, writer, pair)),
        ]
        self._pairs.add(pair)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        # One side ended on its own (not a cut): end the other, like a plain TCP relay.
        self._pairs.discard(pair)
        for writer in (pair.client, pair.upstream):
            writer.transport.abort()

    async def _cut(self) -> None:
        self.cut_off = True
        for pair in list(self._pairs):
            for pump in pair.pumps:
                pump.cancel()
            pair.upstream.transport.abort()  # the server side rolls back and unlocks
            self._held.append(pair.client)  # the replica's side just goes quiet
        self._pairs.clear()

    async def _restore(self) -> None:
        for writer in self._held:
            writer.transport.abort()
        self._held.clear()
        self.cut_off = False

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._restore())

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._restore()
            for pair in list(self._pairs):
                for writer in (pair.client, pair.upstream):
                    writer.transport.abort()

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
