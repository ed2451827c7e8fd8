"""The auditor's pages at 1,000,000 audit events / 200,000 sessions, through a real server.

Headline benchmark of issue 14 (auditor at scale). The broker runs as the product runs
(``supportbroker serve`` in its own process, a SQLite file migrated by ``supportbroker
migrate``); an auditor made with ``supportbroker user create`` logs in through the login
form as a browser does and drives the pages with that session over HTTP/1.1 keep-alive:
the session search with every filter it offers, deep paging, the device suggestions and a
ticket's timeline (inclusion proofs, last verification). One client,
requests one after the other: each figure is what one auditor waits.

Setup (not timed, and NOT the product's request path): 50 technicians, 5,000 devices,
200,000 tickets with one session each are bulk-inserted through the ORM models
(``insert(Model)`` with many rows), and 1,000,000 audit events (5 per ticket, spread over a
year, some ``session.denied``) are sealed through the audit library's own
``AuditLog.append`` in batches of 5,000 with one checkpoint at the end. It takes a minute or
two; ``--keep DIR`` keeps the database for another run (``--reuse DIR``).

Baseline in the same run, rounds interleaved (every case once per round, in order, then the
next round): ``GET /healthz`` (no database, no auth). Printed: p50/p99/max per case, the
ratio of p99s to the baseline's, the load average before and after.

    .venv/bin/python bench/bench_auditor_pages.py [--sessions 200000] [--rounds 3] [--per 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sessions_http import (  # noqa: E402
    BIN,
    Conn,
    _cli,
    _wait_ready,
    free_port,
    loadavg,
    pct,
)

EVENTS_PER_SESSION = 5
TECHNICIANS = 50
DEVICES = 5_000
BATCH = 5_000
START = datetime(2025, 1, 1, tzinfo=UTC)
LIFE = ("session.requested", "session.awaiting_consent", "session.approved", "session.active")


def environment(workdir: Path) -> dict[str, str]:
    return dict(
        os.environ,
        SUPPORTBROKER_ENVIRONMENT="test",
        SUPPORTBROKER_SECRET_KEY="bench-auditor-pages-secret-key-0123456789",
        SUPPORTBROKER_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'broker.db'}",
        SUPPORTBROKER_DATA_DIR=str(workdir / "data"),
        SUPPORTBROKER_GATEWAY_ENABLED="false",
        SUPPORTBROKER_LOG_FORMAT="json",
        SUPPORTBROKER_VERIFY_INTERVAL_SECONDS="0",  # no background verification mid-run
    )


async def populate(env: dict[str, str], sessions: int) -> dict[str, Any]:
    """The data set (see the module docstring); returns what the cases ask for."""
    os.environ.update(env)
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import create_async_engine

    from audit.sealing import NewEvent
    from broker.auth.models import User
    from broker.config import Settings
    from broker.devices.models import Device, DeviceGroup
    from broker.evidence.setup import build_audit_log
    from broker.sessions.models import RemoteSession
    from broker.tickets.models import Ticket

    settings = Settings()
    engine = create_async_engine(settings.database_url)
    log = build_audit_log(settings)
    rnd = random.Random(14)
    ids = lambda: [secrets.token_hex(16) for _ in range(n)]  # noqa: E731
    started = time.perf_counter()
    async with engine.begin() as conn:
        n = TECHNICIANS
        techs = ids()
        await conn.execute(
            insert(User),
            [
                {
                    "id": t,
                    "username": f"tech-{i}",
                    "display_name": f"Tech {i}",
                    "role": "technician",
                }
                for i, t in enumerate(techs)
            ],
        )
        group = secrets.token_hex(16)
        await conn.execute(insert(DeviceGroup), [{"id": group, "name": "bench"}])
        n = DEVICES
        devices = ids()
        await conn.execute(
            insert(Device),
            [
                {
                    "id": d,
                    "name": f"pc-{i:05d}",
                    "group_id": group,
                    "provider": "agent",
                    "provider_device_id": f"pd-{i}",
                }
                for i, d in enumerate(devices)
            ],
        )
        n = sessions
        tickets, sids = ids(), ids()
        ticket_rows, session_rows, events = [], [], []
        for i in range(sessions):
            at = START + timedelta(seconds=i * 365 * 86400 // sessions)
            denied = i % 50 == 0
            ticket_rows.append(
                {"id": tickets[i], "system": "helpdesk", "external_id": f"T-{i}", "subject": "x"}
            )
            session_rows.append(
                {
                    "id": sids[i],
                    "ticket_id": tickets[i],
                    "technician_id": techs[i % TECHNICIANS],
                    "device_id": devices[rnd.randrange(DEVICES)],
                    "provider": "agent" if i % 4 else "anydesk",
                    "reason": "bench",
                    "capabilities": ["terminal"],
                    "duration_minutes": 30,
                    "state": "denied" if denied else "ended",
                    "requested_at": at,
                    "ended_at": at + timedelta(minutes=20),
                }
            )
            types = (*LIFE[:2], "session.denied") if denied else LIFE
            types = (*types, "session.ended")[:EVENTS_PER_SESSION]
            for k, kind in enumerate(types):
                payload = {"actor": {"kind": "user", "name": f"Tech {i % 50}"}, "data": {}}
                payload["data"] = {"session_id": sids[i], "step": k}
                events.append(NewEvent(f"helpdesk:T-{i}", kind, payload, at + timedelta(minutes=k)))
        for lo in range(0, sessions, 20_000):
            await conn.execute(insert(Ticket), ticket_rows[lo : lo + 20_000])
            await conn.execute(insert(RemoteSession), session_rows[lo : lo + 20_000])
    print(f"  rows inserted in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    for lo in range(0, len(events), BATCH):
        async with engine.begin() as conn:
            await log.append(conn, events[lo : lo + BATCH], sign=False)
    async with engine.begin() as conn:
        await log.sign_checkpoint(conn)
    print(f"  {len(events):,} events sealed in {time.perf_counter() - started:.1f} s", flush=True)
    await engine.dispose()
    return {"technician": techs[7], "device": "pc-01234", "sessions": sessions}


def cases(shape: dict[str, Any]) -> dict[str, str]:
    """What an auditor asks, by name; the baseline first."""
    search = "/ui/audit/sessions?"
    last = shape["sessions"] - 1
    return {
        "healthz (baseline)": "/healthz",
        "search: no filter": search,
        "search: page 200": search + "page=200",
        "search: ticket exact": search + urlencode({"ticket": f"helpdesk:T-{last // 2}"}),
        "search: ticket text": search + urlencode({"ticket": f"T-{last // 3}"}),
        "search: technician": search + urlencode({"technician": shape["technician"]}),
        "search: device": search + urlencode({"device": shape["device"]}),
        "search: provider": search + "provider=anydesk",
        "search: state": search + "state=denied",
        "search: dates (a month)": search + "since=2025-06-01&until=2025-06-30",
        "search: event type": search + "event=session.denied",
        "search: event + dates": search + "event=session.denied&since=2025-06-01&until=2025-06-30",
        "device suggestions": "/api/v1/device-names?prefix=pc-012",
        "ticket timeline": f"/ui/audit/tickets/helpdesk/T-{last // 2}",
    }


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    if found is None:
        raise RuntimeError(f"no {name} field in the form")
    return found.group(1)


def log_in(port: int, username: str, password: str) -> str:
    """The auditor logs in through the login form as a browser does (pages admit people,
    not API tokens) and changes the one-time password when asked; returns the Cookie
    header the browser would send from then on."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as client:
        form = client.get("/ui/login")
        answer = client.post(
            "/ui/login",
            data={"username": username, "password": password,
                  "csrf_token": _field(form.text, "csrf_token"), "next": ""},
        )  # fmt: skip
        if answer.status_code != 303:
            raise RuntimeError(f"login answered {answer.status_code}: {answer.text[:300]!r}")
        if answer.headers.get("location", "").startswith("/ui/password"):
            form = client.get("/ui/password")
            new = secrets.token_urlsafe(18)
            changed = client.post(
                "/ui/password",
                data={"current": password, "new": new, "confirm": new,
                      "csrf_token": _field(form.text, "csrf_token")},
            )  # fmt: skip
            if changed.status_code != 303:
                raise RuntimeError(f"password change answered {changed.status_code}")
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def measure(port: int, cookie: str, paths: dict[str, str], rounds: int, per: int) -> None:
    conn = await Conn.open(port)
    times: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for name, path in paths.items():  # warm-up: one of each, not counted
            status, body = await conn.request("GET", path, cookie=cookie)
            if status != 200:
                raise RuntimeError(f"{name}: {path} answered {status}: {body[:300]!r}")
        for r in range(rounds):
            for name, path in paths.items():
                for _ in range(per):
                    t0 = time.perf_counter()
                    status, _body = await conn.request("GET", path, cookie=cookie)
                    times[name].append(time.perf_counter() - t0)
                    assert status == 200, (name, status)
            print(f"  round {r + 1}/{rounds} done, load {loadavg()}", flush=True)
    finally:
        await conn.close()
    base = pct(times["healthz (baseline)"], 0.99)
    print(f"\n  {'case':<26} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/healthz':>12}")
    for name, values in times.items():
        p50, p99 = pct(values, 0.5) * 1e3, pct(values, 0.99) * 1e3
        print(
            f"  {name:<26} {p50:>8.1f} {p99:>8.1f} {max(values) * 1e3:>8.1f} "
            f"{pct(values, 0.99) / base:>11.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per", type=int, default=20, help="requests per case per round")
    parser.add_argument("--keep", type=Path, help="build the data set in DIR and keep it")
    parser.add_argument("--reuse", type=Path, help="a DIR a --keep run built")
    args = parser.parse_args()
    print(f"load average at start: {loadavg()}", flush=True)
    workdir = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="sb-auditor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = environment(workdir)
    shape_file = workdir / "shape.json"
    if args.reuse is None:
        _cli(env, "migrate")
        shape = asyncio.run(populate(env, args.sessions))
        shape_file.write_text(json.dumps(shape))
        out = _cli(env, "user", "create", "bench-auditor", "--role", "auditor")
    else:  # the one-time password of the earlier run is gone: a new one
        out = _cli(env, "user", "reset-password", "bench-auditor")
    shape = json.loads(shape_file.read_text())
    password = re.search(r"one-time password(?: for \S+)?: (\S+)", out)
    if password is None:
        raise RuntimeError(f"no one-time password in: {out!r}")
    port = free_port()
    with (workdir / "serve.log").open("wb") as logfile:
        proc = subprocess.Popen(
            [str(BIN / "supportbroker"), "serve", "--port", str(port)],
            env=env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(port, proc)
            cookie = log_in(port, "bench-auditor", password.group(1))
            print(
                f"{shape['sessions']:,} sessions, {shape['sessions'] * EVENTS_PER_SESSION:,} "
                f"events; {args.rounds} rounds x {args.per} requests per case, one client; "
                f"load {loadavg()}",
                flush=True,
            )
            asyncio.run(measure(port, cookie, cases(shape), args.rounds, args.per))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\nload average at end: {loadavg()}")


if __name__ == "__main__":
    main()
