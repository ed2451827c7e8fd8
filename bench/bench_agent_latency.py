"""Broker overhead from consent approval to an open channel, p50/p99 (target p99 <= 50 ms).

Four processes, as on separate machines: the broker (uvicorn + SSH gateway, SQLite with an
fsync on every commit) in this one, the agent (``supportbroker-agent run``, its real terminal
prompt on stdin/stdout), the technician's client (this file with ``--technician``: httpx and
websockets) and a TCP echo service on the device's side.

For each of N sessions (``forward`` capability): the technician requests the session, takes a
one-time ticket and opens the forward WebSocket at once, sending one byte; the broker holds
that socket while the session awaits consent. The agent shows its prompt; once the
technician's socket is waiting, this process types ``y`` + Enter on the agent's terminal (t0:
the moment the end user answers). From there: the agent signs its receipt and sends it over
the control channel; in one transaction the broker verifies and seals it, approves the
session and attaches the technician's waiting socket (``broker/gateway/access.py``): it opens
the SSH channel to the agent and seals ``session.forward_opened`` and ``session.active``; one
commit (fsync), then the byte is relayed to the echo service; t1 is when the technician's
client has it back. Both stamps are ``CLOCK_MONOTONIC``, one clock for
every process on the machine. Baseline, measured by the same client in the same run: an HTTP
round trip of ``GET /api/v1/sessions/{id}``.

    .venv/bin/python bench/bench_agent_latency.py [-n 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

WARM_UP = 5
PROMPT = b"Allow? [y/N] "  # the end of the agent's terminal prompt (agent/consent.py)

ECHO = textwrap.dedent(
    """
    import asyncio

    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


async def technician(url: str, token: str, device: str, port: int, n: int) -> None:
    """The technician's side, in its own process; one JSON line per step on stdout."""
    import httpx
    import websockets

    def say(**msg: object) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=auth) as http:
        for i in range(n):
            resp = await http.post(
                "/api/v1/sessions",
                json={
                    "ticket": {"system": "standalone", "external_id": f"HD-{i}"},
                    "device_id": device,
                    "reason": "latency benchmark",
                    "capabilities": ["forward"],
                    "duration_minutes": 30,
                },
            )
            resp.raise_for_status()
            sid = resp.json()["id"]
            t = now()
            (await http.get(f"/api/v1/sessions/{sid}")).raise_for_status()
            base = now() - t
            ticket = (
                await http.post(
                    f"/api/v1/gateway/sessions/{sid}/terminal-ticket", json={"mode": "control"}
                )
            ).json()["ticket"]
            uri = url.replace("http", "ws") + f"/api/v1/gateway/forward?ticket={ticket}&port={port}"
            async with websockets.connect(uri, compression=None) as ws:
                await ws.send(b"x")  # relayed as soon as the channel is open
                say(waiting=sid)
                echoed = await ws.recv()
                t1 = now()
                assert echoed == b"x", echoed
            (await http.post(f"/api/v1/sessions/{sid}/end")).raise_for_status()
            say(t1=t1, base=base)


async def spawn(*args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=stdin, stdout=asyncio.subprocess.PIPE
    )


async def main() -> None:
    from bench_agent_common import broker, device_id, enroll_agent, pct, spawn_agent_on_terminal

    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100)
    n = parser.parse_args().n
    echo = await spawn("-c", ECHO)
    assert echo.stdout is not None
    port = int(await echo.stdout.readline())
    total, base = [], []
    procs = [echo]
    try:
        with tempfile.TemporaryDirectory() as d:
            async with broker(Path(d), allowed_ports=[port]) as b:
                settings = await enroll_agent(b)
                agent, terminal = await spawn_agent_on_terminal(settings)
                procs.append(agent)
                dev = device_id(settings)
                while dev not in b.gateway.links:  # noqa: ASYNC110 - a dict, not an event
                    await asyncio.sleep(0.05)
                tech = await spawn(
                    __file__, "--technician", b.url, b.tech_token, dev, str(port), str(n + WARM_UP)
                )
                procs.append(tech)
                assert tech.stdout is not None
                for i in range(n + WARM_UP):
                    await terminal.readuntil(PROMPT)  # the end user sees the request
                    json.loads(await tech.stdout.readline())  # the technician's socket waits
                    await asyncio.sleep(0.05)  # the broker has redeemed the ticket and waits
                    t0 = now()
                    terminal.type(b"y\n")
                    done = json.loads(await tech.stdout.readline())
                    if i >= WARM_UP:
                        total.append(done["t1"] - t0)
                        base.append(done["base"])
                await tech.wait()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    def row(name: str, xs: list[float]) -> str:
        return f"{name:34s} p50 {pct(xs, 0.5) * 1000:7.1f} ms   p99 {pct(xs, 0.99) * 1000:7.1f} ms"

    print(f"{n} sessions")
    print(row("baseline: GET /sessions/{id}", base))
    print(row("device approval -> channel open", total))
    print(f"p99 / target 50 ms: {pct(total, 0.99) * 1000 / 50:.2f}")
    print(f"p50 / baseline p50: {pct(total, 0.5) / pct(base, 0.5):.1f}x")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--technician":
        url, token, device, port, count = sys.argv[2:]
        asyncio.run(technician(url, token, device, int(port), int(count)))
    else:
        asyncio.run(main())
