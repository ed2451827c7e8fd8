"""Peering between replicas (issue 20): a forward's throughput and approval → channel open,
with the technician's socket on the replica holding the agent (A) vs on another one (B).

Two ``supportbroker serve`` processes on one PostgreSQL database (127.0.0.1:5432, a fresh
database dropped afterwards), sharing one set of keys (``supportbroker keys create``), and a
``supportbroker-agent`` in its own terminal enrolled at A's SSH port. A socket opened on B
is relayed to A over the replicas' peering channel (broker/replicas/peering.py): one more
WebSocket hop and one more Python process on the path.

Throughput: one approved session with the ``forward`` right; ``supportbroker connect
--forward`` runs twice, against A and against B, to the same TCP sink on the device's side
(bench_agent_forward.py's sender and sink). Rounds interleaved (A, B, A, B, ...), the best of
each; target B ≥ 0.7 x A.

Approval → channel open: as bench_agent_latency.py, sessions alternately on A and on B: the
technician (this process) requests a ``forward`` session, opens the forward socket on A or B
with one byte in it and waits; the end user types ``y`` at the agent's prompt (t0); t1 when
the byte is back from the echo service. p50/p99 of each; target p99 on B ≤ 50 ms, and the
ratio B/A.

    .venv/bin/python bench/bench_replicas.py [--mb 128] [--runs 3] [-n 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent_common import ROOT, pct
from bench_agent_forward import SINK, free_port, loadavg, send
from bench_agent_latency import ECHO

from tests.e2e.processes import BIN, Agent, Served, clean_env, enrolled_agent, serve

PG_HOST = os.environ.get("SUPPORTBROKER_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("SUPPORTBROKER_TEST_PG_USER", "postgres")
PROMPT = r"Allow\? \[y/N\] "
WARM_UP = 4


async def _pg(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, user=PG_USER, database="postgres")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def replicas(tmp: Path) -> Iterator[tuple[Served, Served, str]]:
    """Replicas A and B on a fresh database; yields them and the database URL."""
    db = f"sb_bench_{secrets.token_hex(6)}"
    asyncio.run(_pg(f'CREATE DATABASE "{db}"'))
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{db}"
    keys = tmp / "secrets"
    base = {
        "SUPPORTBROKER_DATABASE_URL": url,
        "SUPPORTBROKER_SECRET_KEY": "bench-" + secrets.token_urlsafe(24),
        "SUPPORTBROKER_KEK_PATH": str(keys / "kek.json"),
        "SUPPORTBROKER_SIGNING_KEY_PATH": str(keys / "checkpoint-ed25519.pem"),
        "SUPPORTBROKER_GATEWAY_KEY_PATH": str(keys / "gateway_ed25519"),
        "SUPPORTBROKER_CHECKPOINT_PUBLISH_DIR": str(tmp / "checkpoints"),
    }
    started: list[Served] = []
    try:
        subprocess.run(
            [str(BIN / "supportbroker"), "keys", "create"],
            env=clean_env(**base, SUPPORTBROKER_DATA_DIR=str(tmp / "keys")),
            capture_output=True,
            check=True,
        )
        for name in ("a", "b"):
            (tmp / name).mkdir()
            started.append(serve(tmp / name, **base, SUPPORTBROKER_REPLICA_ID=name))
        yield started[0], started[1], url
    finally:
        for served in started:
            with contextlib.suppress(Exception):
                served.stop()
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def _secret(output: str) -> str:
    found = re.search(r"secret \(shown only now\): (\S+)", output)
    assert found, output
    return found.group(1)


def desk(a: Served, tmp: Path, ports: list[int]) -> tuple[str, Agent, str]:
    """A technician's token, the agent (enrolled at A) and its device id."""
    a.cli("group", "add", "bench")
    a.cli("user", "create", "tom", "--role", "technician")
    a.cli("group", "add-member", "bench", "tom")
    scopes = ("--scope", "sessions:read", "--scope", "sessions:write")
    tech = _secret(a.cli("token", "create", "--name", "tom", "--user", "tom", *scopes).stdout)
    scopes = ("--scope", "devices:read", "--scope", "devices:write")
    ops = _secret(a.cli("token", "create", "--name", "ops", "--user", "admin", *scopes).stdout)
    with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {ops}"}) as client:
        gid = client.get("/api/v1/device-groups").json()["items"][0]["id"]
        client.patch(f"/api/v1/device-groups/{gid}", json={"allowed_ports": ports})
    agent = enrolled_agent(a, tmp, "bench")
    device = json.loads(a.cli("device", "list", "--json").stdout)["items"][0]["id"]
    with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {ops}"}) as client:
        deadline = time.monotonic() + 60
        while not client.get("/api/v1/devices", params={"online": "true"}).json()["items"]:
            if time.monotonic() > deadline:
                raise SystemExit("the agent never came online at A")
            time.sleep(0.1)
    return tech, agent, device


async def request(http: httpx.AsyncClient, device: str, i: int) -> str:
    resp = await http.post(
        "/api/v1/sessions",
        json={
            "ticket": {"system": "standalone", "external_id": f"HD-{i}"},
            "device_id": device,
            "reason": "replica benchmark",
            "capabilities": ["forward"],
            "duration_minutes": 30,
        },
    )
    resp.raise_for_status()
    return str(resp.json()["id"])


async def ticket(url: str, token: str, sid: str) -> str:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as h:
        resp = await h.post(f"/api/v1/gateway/sessions/{sid}/terminal-ticket", json={})
        resp.raise_for_status()
        return str(resp.json()["ticket"])


async def approved(agent: Agent, mark: int) -> None:
    await asyncio.to_thread(agent.out.wait_for, PROMPT, after=mark, timeout=30)


async def latency(a: Served, b: Served, token: str, agent: Agent, device: str, n: int,
                  echo: int) -> dict[str, list[float]]:  # fmt: skip
    import websockets

    found: dict[str, list[float]] = {"same replica (A)": [], "other replica (B)": []}
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=a.url, headers=auth) as http:
        for i in range(2 * (n + WARM_UP)):
            name, where = list(found.items())[i % 2][0], (a, b)[i % 2]
            mark = agent.out.mark()
            sid = await request(http, device, i)
            await approved(agent, mark)  # the end user sees the prompt
            secret = await ticket(where.url, token, sid)
            uri = where.url.replace("http", "ws") + (
                f"/api/v1/gateway/forward?ticket={secret}&port={echo}"
            )
            async with websockets.connect(uri, compression=None) as ws:
                await ws.send(b"x")
                await asyncio.sleep(0.15)  # redeemed, relayed (on B), waiting for consent
                t0 = time.monotonic()
                agent.type("y\n")
                echoed = await ws.recv()
                t1 = time.monotonic()
                assert echoed == b"x", echoed
            (await http.post(f"/api/v1/sessions/{sid}/end", json={})).raise_for_status()
            if i >= 2 * WARM_UP:
                found[name].append(t1 - t0)
    return found


async def throughput(a: Served, b: Served, token: str, agent: Agent, device: str, sink: int,
                     mb: int, runs: int) -> dict[str, float]:  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=a.url, headers=auth) as http:
        mark = agent.out.mark()
        sid = await request(http, device, 10_000)
        await approved(agent, mark)
        agent.type("y\n")
        while (await http.get(f"/api/v1/sessions/{sid}")).json()["state"] != "approved":  # noqa: ASYNC110 - the API, not an event
            await asyncio.sleep(0.1)
    relays, ports = [], {}
    try:
        for name, served in (("one replica (A)", a), ("two replicas (B -> A)", b)):
            local = free_port()
            code = (
                "import asyncio; from broker.gateway.cli import serve_forward; "
                f"asyncio.run(serve_forward({served.url!r}, {token!r}, {sid!r}, {local}, {sink}))"
            )
            relays.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-c", code, cwd=str(ROOT), stdout=subprocess.DEVNULL
                )
            )
            ports[name] = local
            await send(local, 1 << 20)  # warm-up: starts the session, first channel
        best = dict.fromkeys(ports, float("inf"))
        total = mb << 20
        for r in range(runs):
            print(f"round {r + 1}: load average {loadavg()}", flush=True)
            for name, local in ports.items():
                took = await send(local, total)
                best[name] = min(best[name], took)
                print(f"  {name:24s}: {mb / took:8.1f} MiB/s", flush=True)
    finally:
        for relay in relays:
            relay.kill()
            await relay.wait()
    return {name: mb / took for name, took in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=60, help="sessions per replica (latency)")
    args = parser.parse_args()
    print(f"nproc {os.cpu_count()}, load average {loadavg()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sink_port, helpers = free_port(), []
        helpers.append(subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)]))
        echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE)
        helpers.append(echo)
        assert echo.stdout is not None
        echo_port = int(echo.stdout.readline())
        try:
            with replicas(tmp) as (a, b, _):
                token, agent, device = desk(a, tmp, [sink_port, echo_port])
                rates = asyncio.run(
                    throughput(a, b, token, agent, device, sink_port, args.mb, args.runs)
                )
                times = asyncio.run(latency(a, b, token, agent, device, args.n, echo_port))
        finally:
            for helper in helpers:
                helper.kill()
                helper.wait()
    (one, two), (same, other) = rates.values(), times.values()
    print(f"payload {args.mb} MiB, best of {args.runs} interleaved rounds")
    for name, rate in rates.items():
        print(f"{name:24s}: {rate:8.1f} MiB/s")
    print(f"ratio two / one replica (target >= 0.7): {two / one:.2f}x")
    print(f"{args.n} sessions per replica, interleaved")
    for name, xs in times.items():
        print(
            f"approval -> channel open, {name:18s}: p50 {pct(xs, 0.5) * 1000:6.1f} ms  "
            f"p99 {pct(xs, 0.99) * 1000:6.1f} ms"
        )
    print(f"p99 other replica / target 50 ms: {pct(other, 0.99) * 1000 / 50:.2f}")
    print(f"p99 other / same replica: {pct(other, 0.99) / pct(same, 0.99):.2f}x")
    print(f"load average {loadavg()}")


if __name__ == "__main__":
    main()
