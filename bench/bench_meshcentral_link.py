"""Time from approval to a usable MeshCentral link, against a real MeshCentral 1.1.55.

Two measurements per session, N sessions each, on one MeshCentral started for the run:

- provider: ``MeshCentralProvider.prepare`` (``createDeviceShareLink`` for the approved
  rights and window + the ticket note in the device log) and one GET of the returned link,
  which must answer 200 (the link is usable);
- broker: the end user's approval through the broker's HTTP API (consent decision: the
  session's state change, ``on_approved``, the audit events, one transaction on SQLite), the
  link read as the technician's console reads it (``launch_for``), and the same GET.

Baseline, measured in the same run on the same control connection: a bare round trip
(``ping``/``pong``). Prints p50/p99 and their ratios to the baseline.

    .venv/bin/python bench/bench_meshcentral_link.py [-n 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.app import create_app
from broker.config import Settings
from broker.db import migrate
from broker.logging import configure_logging
from broker.providers import registry
from broker.providers import service as providers
from broker.providers.base import DeviceRef, GroupPolicy, SessionSpec, Window
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.provider import MeshCentralProvider
from broker.providers.meshcentral.settings import MeshCentralSettings
from broker.sessions.models import RemoteSession
from tests.factories import Desk, consent_token, make_device, make_group, make_token, make_user
from tests.factories import request_session as request_session_
from tests.providers import meshcentral_server as mc

Timings = dict[str, list[float]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(into: list[float], step: Callable[[], Awaitable[Any]]) -> Any:
    t0 = time.perf_counter()
    result = await step()
    into.append(time.perf_counter() - t0)
    return result


async def ping(provider: MeshCentralProvider) -> None:
    await provider.control.request({"action": "ping"}, reply_action="pong")


async def provider_only(
    provider: MeshCentralProvider, http: httpx.AsyncClient, device: DeviceRef, n: int, t: Timings
) -> None:
    for i in range(n):
        await timed(t["baseline"], lambda: ping(provider))
        now = datetime.now(UTC).replace(microsecond=0)
        spec = SessionSpec(
            secrets.token_hex(8),
            f"bench:HD-{i}",
            "Bench Tech",
            "benchmark 100% load",
            ("view", "control"),
            Window(now, now + timedelta(minutes=30)),
        )

        async def link(spec: SessionSpec = spec) -> str | None:
            launch = await provider.prepare(spec, device, GroupPolicy("bench"))
            usable(await http.get(str(launch.url)))
            return launch.handle

        handle = await timed(t["provider"], link)
        await provider.end(spec, device, handle)


def usable(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise SystemExit(f"share link not usable: HTTP {response.status_code}")


async def through_broker(
    provider: MeshCentralProvider, http: httpx.AsyncClient, nodeid: str, n: int, t: Timings
) -> None:
    """The same through the broker's API on a migrated SQLite database."""
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    url = f"sqlite+aiosqlite:///{workdir / 'broker.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    settings = Settings(
        environment="test",
        database_url=url,
        data_dir=workdir / "data",
        secret_key=SecretStr("bench-secret-key-" + "b" * 16),
        sweep_interval_seconds=3600.0,
        gateway_enabled=False,
    )
    app = create_app(settings)
    registry.install("meshcentral", provider)
    try:
        async with app.router.lifespan_context(app):
            configure_logging("console", logging.WARNING)  # keep the figures readable
            tech, _ = await make_user(app, "technician")
            group = await make_group(app, [tech])
            device = await make_device(
                app, group, provider="meshcentral", provider_device_id=nodeid
            )
            desk = Desk(tech, await make_token(app, tech), group, device)
            transport = httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as api:
                for _ in range(n):
                    await one_broker_session(app, api, http, desk, t)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def one_broker_session(
    app: Any, api: httpx.AsyncClient, http: httpx.AsyncClient, desk: Desk, t: Timings
) -> None:
    created = await request_session_(api, desk)
    if created.status_code != 201:
        raise SystemExit(f"request refused: {created.text}")
    sid = created.json()["id"]

    async def approve_to_link() -> None:
        decided = await api.post(
            f"/api/v1/consent/{consent_token(created.json())}/decision",
            json={"decision": "approve", "name": "Bench User"},
        )
        if decided.status_code != 200:
            raise SystemExit(f"approval refused: {decided.text}")
        async with app.state.sessionmaker() as db:  # what the technician's console reads
            row = await db.get(RemoteSession, sid)
            launch = await providers.launch_for(db, row) if row is not None else None
        if launch is None or launch.url is None:
            raise SystemExit("approved, but the broker shows no MeshCentral link")
        usable(await http.get(launch.url))

    await timed(t["broker"], approve_to_link)
    ended = await api.post(f"/api/v1/sessions/{sid}/cancel", headers=desk.headers)
    if ended.status_code != 200:
        raise SystemExit(f"could not end the session: {ended.text}")


async def run(server: mc.MeshServer, n: int) -> None:
    settings = MeshCentralSettings(
        url=server.url, username=mc.ADMIN_USER, login_key=SecretStr(server.login_key_hex)
    )
    provider = MeshCentralProvider(settings)
    meshid = await admin.create_group(provider.control, "bench")
    nodeid = await admin.add_local_device(provider.control, meshid, "bench-pc", "10.0.0.9")
    device = DeviceRef("bench", "bench-pc", nodeid, "bench")
    t: Timings = {"baseline": [], "provider": [], "broker": []}
    async with httpx.AsyncClient() as http:
        for _ in range(10):  # warm-up: connection, JIT, first page render
            await ping(provider)
        await provider_only(provider, http, device, n, t)
        await through_broker(provider, http, nodeid, n, t)
    await provider.aclose()
    report(t, n)


def report(t: Timings, n: int) -> None:
    b50, b99 = pct(t["baseline"], 0.5) * 1000, pct(t["baseline"], 0.99) * 1000
    print(f"MeshCentral 1.1.55 on loopback, {n} sessions per measurement")
    print(f"baseline control round trip (ping):     p50 {b50:7.2f} ms  p99 {b99:7.2f} ms")
    for key, label in (
        ("provider", "prepare -> usable share link:"),
        ("broker", "broker approval -> usable link:"),
    ):
        v50, v99 = pct(t[key], 0.5) * 1000, pct(t[key], 0.99) * 1000
        print(
            f"{label:39} p50 {v50:7.2f} ms  p99 {v99:7.2f} ms  "
            f"mean {statistics.mean(t[key]) * 1000:.2f} ms  "
            f"ratio to baseline p50 {v50 / b50:.1f}x  p99 {v99 / b99:.1f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=100)
    args = parser.parse_args()
    if mc.node_missing():
        print(f"skipped: {mc.node_missing()}")
        return 0
    base = Path(tempfile.mkdtemp(dir=mc.cache_dir().parent))
    server = mc.prepare(base)
    try:
        mc.start(server)
        asyncio.run(run(server, args.n))
    finally:
        mc.stop(server)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
