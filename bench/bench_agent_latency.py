"""Broker overhead from consent approval to an open channel, p50/p99 (target p99 <= 50 ms).

For each of N sessions (``control`` capability): the end user approves on the device (the agent's
prompter answers at t0); the signed receipt goes over the control channel, the broker verifies
and seals it and approves the session (t1: the session reads ``approved``); the technician at
once asks for a one-time ticket, opens the forward WebSocket and gets its first byte echoed back
through the agent from a local echo port (t2: the channel is open and carries data). Baseline,
measured in the same run on the same broker: an HTTP round trip of ``GET /api/v1/sessions/{id}``
(what a technician's page does anyway). Broker, agent and technician share one process.

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
    """Approves at once and notes when (t0)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    async def ask(self, prompt: Any, wait_seconds: float) -> tuple[bool, str]:
        self.prompts.append(prompt)
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
            decide, open_, total, base = [], [], [], []
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
                    stamps = len(prompter.stamps)
                    while True:  # the technician watches the session (1 ms polling in-process)
                        t = time.perf_counter()
                        state = (await http.get(f"/api/v1/sessions/{sid}")).json()["state"]
                        if state == "approved":
                            break
                        if len(prompter.stamps) == stamps:
                            base.append(time.perf_counter() - t)  # before the prompt: baseline
                        await asyncio.sleep(0.001)
                    t1 = time.perf_counter()
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
                        await ws.send(b"x")
                        assert await ws.recv() == b"x"
                        t2 = time.perf_counter()
                    t0 = prompter.stamps[-1]
                    if i >= 5:
                        decide.append(t1 - t0)
                        open_.append(t2 - t1)
                        total.append(t2 - t0)
                    (await http.post(f"/api/v1/sessions/{sid}/end")).raise_for_status()
            await agent.stop()
    echo.close()

    def row(name: str, xs: list[float]) -> str:
        return f"{name:34s} p50 {pct(xs, 0.5) * 1000:7.1f} ms   p99 {pct(xs, 0.99) * 1000:7.1f} ms"

    print(f"{n} sessions")
    print(row("baseline: GET /sessions/{id}", base))
    print(row("device approval -> approved", decide))
    print(row("approved -> channel open (echo)", open_))
    print(row("device approval -> channel open", total))
    print(f"p99 total / target 50 ms: {pct(total, 0.99) * 1000 / 50:.2f}")
    print(f"p50 total / baseline p50: {pct(total, 0.5) / pct(base, 0.5):.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
