"""A forward through ``supportbroker connect --forward`` (the technician's CLI), the broker and
a real agent carries bulk bytes intact both ways, connection after connection (one HTTP client
asks for every connection's ticket); the relays' heap setting is applied where it can be."""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import socket
import sys
from typing import Any

import httpx

from agent.channels import keep_relay_heap
from broker.gateway.cli import serve_forward
from tests.factories import make_group
from tests.gateway.helpers import (
    ScriptedPrompter,
    echo_server,
    enrolled_agent,
    request_session,
    wait_state,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _round_trip(port: int, payload: bytes) -> bytes:
    """Send ``payload`` through the local port while reading the echo back."""
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)

    async def send() -> None:
        for at in range(0, len(payload), 1 << 16):
            writer.write(payload[at : at + (1 << 16)])
            await writer.drain()

    sending = asyncio.create_task(send())
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    await sending
    writer.close()
    return got


async def test_cli_forward_carries_bulk_bytes_intact(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    echo, port = await echo_server()
    group = await make_group(app, [people["tech"]], allowed_ports=[port])
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, ScriptedPrompter([True]))
    token = people["tech_token"]
    local = _free_port()
    forwarding = None
    try:
        sid = (await request_session(client, token, agent.device_id, ["forward"]))["id"]
        await wait_state(client, token, sid, "approved")
        forwarding = asyncio.create_task(serve_forward(live_url, token, sid, local, port))
        # Larger than a WebSocket frame (256 KiB) and an SSH packet (128 KiB), not a multiple
        # of either: each is split and joined again on the way.
        for size in (3 * (1 << 20) + 12345, 700_001):
            payload = os.urandom(size)
            got = await _round_trip(local, payload)
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert not forwarding.done()  # still serving: nothing was refused
    finally:
        if forwarding is not None:
            forwarding.cancel()
            assert await forwarding == 0  # Ctrl-C: the forward stops cleanly
        await agent.stop()
        echo.close()


def test_relay_heap_pad_is_set_on_glibc() -> None:
    expected = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert keep_relay_heap() is expected
