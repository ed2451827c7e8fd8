"""The real path: ``POST /api/v1/sessions`` through a real ``supportbroker serve`` process.

Headline benchmark of issue 14. The broker runs as the product runs (``supportbroker serve``
in its own process, its own settings from the environment, SQLite file or PostgreSQL
database migrated by the product); it is set up through its CLI (admin and its token) and API
(group, technicians with tokens, devices). The load comes from this process: ``--clients``
concurrent HTTP/1.1 keep-alive connections, each sending its next request when the answer to
the last arrived (a closed loop). The client is a few lines of asyncio on raw sockets: cheap
next to the server, so the server's cost is what is measured.

Baseline in the same run: ``GET /healthz`` (no database, no auth) with the same clients,
rounds interleaved (sessions, healthz, sessions, ...). Printed per round: rate, p50, p99,
maximum, non-2xx count, the broker processes' CPU time per request (from /proc: what a
request costs whatever else runs on the machine), and the load average before and after.

    .venv/bin/python bench/bench_sessions_http.py                     # SQLite, 8 clients
    .venv/bin/python bench/bench_sessions_http.py --postgres          # one process
    .venv/bin/python bench/bench_sessions_http.py --postgres --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://127.0.0.1:5432/postgres"
SESSIONS_PER_TECHNICIAN = 100  # the highest per-user limit the API accepts


# --profile: the server under cProfile. Uvicorn re-raises SIGTERM after its shutdown with the
# handler it found installed; this one makes it a SystemExit, so the profile gets written.
PROFILED = """
import cProfile, signal, sys
from broker.cli import main
def stop(*_): raise SystemExit(0)
signal.signal(signal.SIGTERM, stop)
out = sys.argv.pop(1)
sys.argv[0] = "supportbroker"
profiler = cProfile.Profile()
try:
    profiler.runcall(main)
except SystemExit:
    pass
finally:
    profiler.dump_stats(out)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the broker processes so far (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- a minimal HTTP/1.1 keep-alive client -----------------------------------------------


class Conn:
    """One keep-alive connection; ``request`` returns (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        *,
        cookie: str | None = None,
    ) -> tuple[int, bytes]:
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        if cookie:  # a browser's session (pages admit logged-in people, not API tokens)
            head.append(f"Cookie: {cookie}")
        if body is not None:
            head.append("Content-Type: application/json")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def call(port: int, method: str, path: str, token: str, body: Any = None) -> Any:
    conn = await Conn.open(port)
    try:
        status, data = await conn.request(method, path, token, body)
    finally:
        await conn.close()
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data) if data else None


# --- the broker under test --------------------------------------------------------------


@dataclass
class Broker:
    ports: list[int]
    admin_token: str
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [str(BIN / "supportbroker"), *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"supportbroker {' '.join(args)}: {out.stderr or out.stdout}")
    return out.stdout


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    name = f"sb_bench_{secrets.token_hex(4)}"
    subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name}"], check=True)
    try:
        yield f"postgresql+asyncpg://127.0.0.1:5432/{name}"
    finally:
        subprocess.run(
            ["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False
        )


@contextlib.contextmanager
def running_broker(
    tmp: Path, url: str, processes: int, profile: Path | None = None
) -> Iterator[Broker]:
    env = dict(
        os.environ,
        SUPPORTBROKER_ENVIRONMENT="test",
        SUPPORTBROKER_SECRET_KEY="bench-" + secrets.token_urlsafe(24),
        SUPPORTBROKER_DATABASE_URL=url,
        SUPPORTBROKER_DATA_DIR=str(tmp / "data"),
        SUPPORTBROKER_GATEWAY_ENABLED="false",
        SUPPORTBROKER_LOG_FORMAT="json",
    )
    _cli(env, "migrate")
    _cli(env, "user", "create", "bench-admin", "--role", "admin")
    scopes = ["users:admin", "devices:read", "devices:write", "sessions:read"]
    out = _cli(env, "token", "create", "--name", "bench", "--user", "bench-admin",
               *[a for s in scopes for a in ("--scope", s)])  # fmt: skip
    admin_token = out.rsplit("secret (shown only now):", 1)[1].split()[0]
    broker = Broker([], admin_token, env)
    try:
        for i in range(processes):
            port = free_port()
            log = (tmp / f"serve-{i}.log").open("wb")
            command = [str(BIN / "supportbroker")]
            if profile is not None:
                command = [sys.executable, "-c", PROFILED, str(profile / f"serve-{i}.prof")]
            proc = subprocess.Popen(
                [*command, "serve", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            broker.procs.append(proc)
            broker.ports.append(port)
        for port, proc in zip(broker.ports, broker.procs, strict=True):
            _wait_ready(port, proc)
        yield broker
    finally:
        for proc in broker.procs:
            proc.terminate()
        for proc in broker.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"supportbroker serve exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError("supportbroker serve did not start within 60 s")


@dataclass
class Desk:
    tokens: list[str]
    device_ids: list[str]


async def build_desk(broker: Broker, technicians: int) -> Desk:
    """A device group, ``technicians`` technicians (limit 100 open sessions each) with a
    token each, and one device per technician, all through the admin API."""
    port, admin = broker.ports[0], broker.admin_token
    group = await call(port, "POST", "/api/v1/device-groups", admin, {"name": "bench-desk"})
    tokens, devices = [], []
    for i in range(technicians):
        made = await call(
            port,
            "POST",
            "/api/v1/users",
            admin,
            {
                "username": f"tech-{i:03d}",
                "role": "technician",
                "display_name": f"Technician {i}",
                "max_concurrent_sessions": SESSIONS_PER_TECHNICIAN,
            },
        )
        uid = made["user"]["id"]
        await call(port, "PUT", f"/api/v1/device-groups/{group['id']}/members/{uid}", admin)
        tok = await call(
            port,
            "POST",
            "/api/v1/tokens",
            admin,
            {"name": f"tech-{i}", "owner_id": uid, "scopes": ["sessions:write"]},
        )
        tokens.append(tok["secret"])
        dev = await call(
            port,
            "POST",
            "/api/v1/devices",
            admin,
            {
                "name": f"pc-{i:03d}",
                "group_id": group["id"],
                "provider": "null",
                "provider_device_id": f"null-{i}",
                "owner_name": "Erika Mustermann",
            },
        )
        devices.append(dev["id"])
    return Desk(tokens, devices)


# --- load ---------------------------------------------------------------------------------


@dataclass
class Round:
    name: str
    count: int
    seconds: float
    latencies: list[float]
    errors: int
    cpu: float = 0.0  # the broker processes' CPU seconds during the round

    def line(self) -> str:
        lat = self.latencies or [0.0]
        return (
            f"{self.name:10} {self.count / self.seconds:8.1f}/s  p50 {pct(lat, 0.5) * 1e3:7.2f} ms"
            f"  p99 {pct(lat, 0.99) * 1e3:7.2f} ms  max {max(lat) * 1e3:7.2f} ms"
            f"  >1s {sum(x > 1 for x in lat):3d}  errors {self.errors}"
            f"  broker CPU {self.cpu / max(self.count, 1) * 1e3:6.2f} ms/request"
        )


class Slots:
    """Hands out (token, device) pairs so no technician goes over their open-session limit."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.used = [0] * len(desk.tokens)
        self.next = 0

    def take(self) -> tuple[str, str] | None:
        for _ in range(len(self.used)):
            i = self.next
            self.next = (self.next + 1) % len(self.used)
            if self.used[i] < SESSIONS_PER_TECHNICIAN:
                self.used[i] += 1
                return self.desk.tokens[i], self.desk.device_ids[i]
        return None


async def run_round(
    name: str, ports: list[int], clients: int, count: int, slots: Slots | None
) -> Round:
    latencies: list[float] = []
    errors = 0
    left = count

    async def client(k: int) -> None:
        nonlocal left, errors
        conn = await Conn.open(ports[k % len(ports)])
        try:
            while left > 0:
                left -= 1
                if slots is None:
                    t0 = time.perf_counter()
                    status, _ = await conn.request("GET", "/healthz")
                else:
                    pair = slots.take()
                    if pair is None:
                        raise RuntimeError("out of technicians: raise --technicians")
                    token, device = pair
                    body = {
                        "ticket": {
                            "system": "helpdesk",
                            "external_id": f"HD-{secrets.token_hex(4)}",
                        },
                        "device_id": device,
                        "reason": "Printer driver keeps crashing after the update",
                        "capabilities": ["view", "control"],
                        "duration_minutes": 30,
                    }
                    t0 = time.perf_counter()
                    status, _ = await conn.request("POST", "/api/v1/sessions", token, body)
                latencies.append(time.perf_counter() - t0)
                if not 200 <= status < 300:
                    errors += 1
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return Round(name, len(latencies), time.perf_counter() - start, latencies, errors)


async def measure(args: argparse.Namespace, broker: Broker) -> list[Round]:
    per_round = args.requests
    need = (args.rounds + 1) * per_round // SESSIONS_PER_TECHNICIAN + 2
    desk = await build_desk(broker, max(args.technicians, need))
    slots = Slots(desk)
    ports = broker.ports
    # Warm-up (not counted): imports, caches, the first checkpoint, connections.
    await run_round("warm-up", ports, args.clients, min(200, per_round), slots)
    await run_round("warm-up", ports, args.clients, 500, None)
    rounds = []
    pids = [p.pid for p in broker.procs]
    for i in range(args.rounds):
        print(f"round {i + 1}: load average {loadavg()}", flush=True)
        before = cpu_seconds(pids)
        s = await run_round("sessions", ports, args.clients, per_round, slots)
        s.cpu = cpu_seconds(pids) - before
        print("  " + s.line(), flush=True)
        before = cpu_seconds(pids)
        h = await run_round("healthz", ports, args.clients, per_round * 4, None)
        h.cpu = cpu_seconds(pids) - before
        print("  " + h.line(), flush=True)
        print(f"  ratio sessions/healthz {s.count / s.seconds / (h.count / h.seconds):.3f}")
        rounds += [s, h]
    return rounds


def summary(rounds: list[Round], args: argparse.Namespace, where: str) -> None:
    s = [r for r in rounds if r.name == "sessions"]
    h = [r for r in rounds if r.name == "healthz"]
    lat = [x for r in s for x in r.latencies]
    rate = sum(r.count for r in s) / sum(r.seconds for r in s)
    base = sum(r.count for r in h) / sum(r.seconds for r in h)
    print(
        f"\n{where}, {args.clients} clients, {len(s)} rounds: POST /api/v1/sessions "
        f"{rate:.1f}/s, p50 {pct(lat, 0.5) * 1e3:.1f} ms, p99 {pct(lat, 0.99) * 1e3:.1f} ms, "
        f"max {max(lat) * 1e3:.1f} ms, over 1 s: {sum(x > 1 for x in lat)}, "
        f"errors {sum(r.errors for r in s)}; broker CPU "
        f"{sum(r.cpu for r in s) / sum(r.count for r in s) * 1e3:.2f} ms/request; "
        f"/healthz {base:.1f}/s; ratio {rate / base:.3f}; "
        f"load average now {loadavg()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--technicians", type=int, default=8)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--processes", type=int, default=1, help="broker processes")
    parser.add_argument("--profile", type=Path, help="directory: run the brokers under cProfile")
    args = parser.parse_args()
    if args.processes > 1 and not args.postgres:
        parser.error("several broker processes share a PostgreSQL database, not a SQLite file")
    print(f"nproc {os.cpu_count()}, load average {loadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.postgres:
                url = stack.enter_context(postgres_database())
                where = f"PostgreSQL, {args.processes} process(es)"
            else:
                url = f"sqlite+aiosqlite:///{tmp / 'broker.db'}"
                where = "SQLite (WAL, synchronous=FULL), 1 process"
            broker = stack.enter_context(running_broker(tmp, url, args.processes, args.profile))
            rounds = asyncio.run(measure(args, broker))
            summary(rounds, args, where)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
