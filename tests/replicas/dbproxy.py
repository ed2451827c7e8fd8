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
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(eq=False)  # kept in a set by identity
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class Relay:
    """The relay itself, on the running event loop (its own process: see :class:`DbProxy`)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut_off = False
        self._pairs: set[_Pair] = set()
        self._held: list[asyncio.StreamWriter] = []

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

    def cut(self) -> None:
        self.cut_off = True
        for pair in list(self._pairs):
            for pump in pair.pumps:
                pump.cancel()
            pair.upstream.transport.abort()  # the server side rolls back and unlocks
            self._held.append(pair.client)  # the replica's side just goes quiet
        self._pairs.clear()

    def restore(self) -> None:
        for writer in self._held:
            writer.transport.abort()
        self._held.clear()
        self.cut_off = False


async def _serve(host: str, port: int) -> None:
    """Relay to ``host:port``; print the port listened on; SIGUSR1 cuts, SIGUSR2 restores
    (each answered with a line once done); SIGTERM ends it."""
    relay = Relay(host, port)
    server = await asyncio.start_server(relay._accepted, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def act(what: str) -> None:
        relay.cut() if what == "cut" else relay.restore()
        print(what, flush=True)

    loop.add_signal_handler(signal.SIGUSR1, act, "cut")
    loop.add_signal_handler(signal.SIGUSR2, act, "restored")
    loop.add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    server.close()


class DbProxy:
    """The relay in a process of its own (the test process's own load must not slow the
    replicas' database traffic), driven by signals."""

    def __init__(self, host: str, port: int) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.replicas.dbproxy", host, str(port)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self._proc.stdout is not None
        self._out = self._proc.stdout
        self.port = int(self._out.readline())

    def _signal(self, sig: int, answer: bytes) -> None:
        self._proc.send_signal(sig)
        assert self._out.readline().strip() == answer

    def cut(self) -> None:
        self._signal(signal.SIGUSR1, b"cut")

    def restore(self) -> None:
        self._signal(signal.SIGUSR2, b"restored")

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
