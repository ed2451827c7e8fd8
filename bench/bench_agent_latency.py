"""Broker overhead from consent approval to an open channel, p50/p99 (target p99 <= 50 ms).

For each of N sessions (``control`` capability): the technician requests the session, takes a
one-time ticket and opens the forward WebSocket at once; the broker holds that socket while
the session awaits consent. The agent prompts the end user, who approves (t0, stamped once the
technician's socket is waiting). From there it is the broker's work: the signed receipt
crosses the control channel, the broker verifies and seals it and approves the session; the
commit wakes the waiting socket (push, no polling: ``broker/gateway/signals.py``), which
attaches (``session.started``), opens the SSH channel to the agent and relays the first byte,
echoed back from a local port on the device (t1). Baseline, measured in the same run on the
same broker: an HTTP round trip of ``GET /api/v1/sessions/{id}``. Broker, agent and
technician share one process (SQLite, fsync on every commit).

    .venv/bin/python bench/bench_agent_latency.py [-n 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_agent_common import broker, pct

from tests.gateway.helpers import ScriptedPrompter, enrolled_agent


class StampingPrompter(ScriptedPrompter):
    """Approves once the technician's socket is waiting, and notes when (t0)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []
        self.ready = asyncio.Event()

    async def ask(self, prompt: Any, wait_seconds: float) -> tuple[bool, str]:
        self.prompts.append(prompt)
        await self.ready.wait()
        self.ready.clear()
        await asyncio.sleep(0.05)  # the broker has redeemed the ticket and is waiting
        self.stamps.append(time.perf_counter())
        return True, "user"


async def echo_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def main() -> None:
    import httpx
    import websockets

    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100)
    n = parser.parse_args().n
    echo, port = await echo_server()
    with tempfile.TemporaryDirectory() as d:
        async with broker(Path(d), allowed_ports=[port]) as b:
            prompter = StampingPrompter()
            agent = await enrolled_agent(b.app, b.gateway, Path(d), b.group.name, prompter)
            auth = {"Authorization": f"Bearer {b.tech_token}"}
            total, base = [], []
            async with httpx.AsyncClient(base_url=b.url, headers=auth) as http:
                for i in range(n + 5):  # the first 5 warm up
                    resp = await http.post(
                        "/api/v1/sessions",
                        json={
                            "ticket": {"system": "standalone", "external_id": f"HD-{i}"},
                            "device_id": agent.device_id,
                            "reason": "latency benchmark",
                            "capabilities": ["control"],
                            "duration_minutes": 30,
                        },
                    )
                    resp.raise_for_status()
                    sid = resp.json()["id"]
                    t = time.perf_counter()
                    (await http.get(f"/api/v1/sessions/{sid}")).raise_for_status()
                    if i >= 5:
                        base.append(time.perf_counter() - t)
                    ticket = (
                        await http.post(
                            f"/api/v1/gateway/sessions/{sid}/terminal-ticket",
                            json={"mode": "control"},
                        )
                    ).json()["ticket"]
                    uri = b.url.replace("http", "ws") + (
                        f"/api/v1/gateway/forward?ticket={ticket}&port={port}"
                    )
                    async with websockets.connect(uri, compression=None) as ws:
                        prompter.ready.set()
                        await ws.send(b"x")  # relayed as soon as the channel is open
                        echoed = await ws.recv()
                        assert echoed == b"x", echoed
                        t1 = time.perf_counter()
                    if i >= 5:
                        total.append(t1 - prompter.stamps[-1])
                    (await http.post(f"/api/v1/sessions/{sid}/end")).raise_for_status()
            await agent.stop()
    echo.close()

    def row(name: str, xs: list[float]) -> str:
        return f"{name:34s} p50 {pct(xs, 0.5) * 1000:7.1f} ms   p99 {pct(xs, 0.99) * 1000:7.1f} ms"

    print(f"{n} sessions")
    print(row("baseline: GET /sessions/{id}", base))
    print(row("device approval -> channel open", total))
    print(f"p99 / target 50 ms: {pct(total, 0.99) * 1000 / 50:.2f}")
    print(f"p50 / baseline p50: {pct(total, 0.5) / pct(base, 0.5):.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
