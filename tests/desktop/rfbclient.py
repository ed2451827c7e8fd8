"""A small RFB viewer for the tests, speaking to the broker's desktop WebSocket.

It does what noVNC does on the wire (ready/start, the RFB 3.8 handshake with security None,
then messages) and reads Raw framebuffer updates in a pixel format it sets itself
(32 bits, little-endian, red/green/blue shifts 16/8/0), so tests can check pixels too.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from typing import Any

import websockets

from broker.gateway import cli as gateway_cli

OUR_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


class Refused(Exception):
    """The broker refused the socket with a JSON error."""


@dataclass
class Update:
    rects: list[tuple[int, int, int, int, bytes]]  # x, y, w, h, BGRX pixels

    def pixel(self, x: int, y: int) -> tuple[int, int, int] | None:
        for rx, ry, w, h, data in self.rects:
            if rx <= x < rx + w and ry <= y < ry + h:
                offset = ((y - ry) * w + (x - rx)) * 4
                b, g, r = data[offset], data[offset + 1], data[offset + 2]
                return r, g, b
        return None


class RfbClient:
    def __init__(self, ws: Any, ready: dict[str, Any]) -> None:
        self.ws = ws
        self.ready = ready
        self._buf = bytearray()
        self.width = self.height = 0
        self.name = b""

    @classmethod
    async def open(cls, live_url: str, token: str, session_id: str, mode: str) -> RfbClient:
        secret = await gateway_cli.ticket(live_url, token, session_id, mode)
        uri = gateway_cli.ws_url(live_url, f"/api/v1/gateway/desktop?ticket={secret}")
        ws = await websockets.connect(uri, max_size=None)
        first = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if "error" in first:
            await ws.close()
            raise Refused(first["detail"])
        await ws.send(json.dumps({"type": "start"}))
        client = cls(ws, first)
        await client.handshake()
        return client

    async def read(self, size: int, timeout: float = 30.0) -> bytes:
        async with asyncio.timeout(timeout):
            while len(self._buf) < size:
                frame = await self.ws.recv()
                assert isinstance(frame, bytes), f"a text frame inside RFB: {frame!r}"
                self._buf += frame
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def handshake(self) -> None:
        assert await self.read(12) == b"RFB 003.008\n"
        await self.send(b"RFB 003.008\n")
        count = (await self.read(1))[0]
        assert list(await self.read(count)) == [1], "the broker offers security None only"
        await self.send(b"\x01")
        assert await self.read(4) == b"\0\0\0\0"
        await self.send(b"\x00")  # ClientInit: not shared (the broker shares regardless)
        header = await self.read(24)
        self.width, self.height = struct.unpack(">HH", header[:4])
        (length,) = struct.unpack(">I", header[20:24])
        self.name = await self.read(length)
        await self.send(b"\x00\x00\x00\x00" + OUR_FORMAT)  # SetPixelFormat
        await self.encodings([0])  # Raw only

    async def encodings(self, wanted: list[int]) -> None:
        await self.send(struct.pack(f">BxH{len(wanted)}i", 2, len(wanted), *wanted))

    async def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        await self.send(struct.pack(">BBHH", 5, buttons, x, y))

    async def key(self, keysym: int, down: bool) -> None:
        await self.send(struct.pack(">BBxxI", 4, int(down), keysym))

    async def cut_text(self, text: bytes) -> None:
        await self.send(struct.pack(">BxxxI", 6, len(text)) + text)

    async def request(self, incremental: bool = False) -> None:
        await self.send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    async def update(self, timeout: float = 30.0) -> Update:
        """The next FramebufferUpdate (Bell and cut text skipped), Raw rectangles only."""
        async with asyncio.timeout(timeout):
            while True:
                kind = (await self.read(1))[0]
                if kind == 0:
                    (_, count) = struct.unpack(">BH", await self.read(3))
                    rects = []
                    for _ in range(count):
                        x, y, w, h, enc = struct.unpack(">HHHHi", await self.read(12))
                        assert enc == 0, f"asked for Raw only, got encoding {enc}"
                        rects.append((x, y, w, h, await self.read(w * h * 4)))
                    return Update(rects)
                if kind == 2:
                    continue
                if kind == 3:
                    (length,) = struct.unpack(">3xI", await self.read(7))
                    await self.read(length)
                    continue
                raise AssertionError(f"unexpected server message {kind}")

    async def full_frame(self) -> Update:
        await self.request(incremental=False)
        return await self.update()

    async def closed(self, timeout: float = 30.0) -> tuple[int | None, str]:
        """Wait for the broker to close; (code, reason)."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.ws.recv()
            except websockets.ConnectionClosed as exc:
                rcvd = exc.rcvd
                return (rcvd.code, rcvd.reason) if rcvd else (None, "")

    async def close(self) -> None:
        await self.ws.close()
