"""Time from approval to a usable MeshCentral link, against a real MeshCentral 1.1.55.

For each of N sessions: ``MeshCentralProvider.prepare`` (createDeviceShareLink for the approved
rights and window + the ticket note in the device log) and one GET of the returned link that
must answer 200 (the link is usable). Baseline, measured in the same run on the same
connection: a bare control round trip (``ping``/``pong``). Prints p50/p99 and their ratio.

    .venv/bin/python bench/bench_meshcentral_link.py [-n 100]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.providers.base import DeviceRef, GroupPolicy, SessionSpec, Window
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.provider import MeshCentralProvider
from broker.providers.meshcentral.settings import MeshCentralSettings
from tests.providers import meshcentral_server as mc


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(server: mc.MeshServer, n: int) -> None:
    settings = MeshCentralSettings(
        url=server.url, username=mc.ADMIN_USER, login_key=SecretStr(server.login_key_hex)
    )
    provider = MeshCentralProvider(settings)
    meshid = await admin.create_group(provider.control, "bench")
    nodeid = await admin.add_local_device(provider.control, meshid, "bench-pc", "10.0.0.9")
    device = DeviceRef("bench", "bench-pc", nodeid, "bench")
    baseline, link = [], []
    async with httpx.AsyncClient() as http:
        for _ in range(10):  # warm-up: connection, JIT, first page render
            await provider.control.request({"action": "ping"}, reply_action="pong")
        for i in range(n):
            t0 = time.perf_counter()
            await provider.control.request({"action": "ping"}, reply_action="pong")
            baseline.append(time.perf_counter() - t0)

            now = datetime.now(UTC).replace(microsecond=0)
            spec = SessionSpec(
                secrets.token_hex(8),
                f"bench:HD-{i}",
                "Bench Tech",
                "benchmark 100% load",
                ("view", "control"),
                Window(now, now + timedelta(minutes=30)),
            )
            t0 = time.perf_counter()
            launch = await provider.prepare(spec, device, GroupPolicy("bench"))
            assert launch.url is not None
            response = await http.get(launch.url)
            link.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise SystemExit(f"share link not usable: HTTP {response.status_code}")
            await provider.end(spec, device, launch.handle)
    await provider.aclose()
    b50, b99 = pct(baseline, 0.5) * 1000, pct(baseline, 0.99) * 1000
    l50, l99 = pct(link, 0.5) * 1000, pct(link, 0.99) * 1000
    print(f"MeshCentral 1.1.55 on loopback, {n} sessions")
    print(f"baseline control round trip (ping): p50 {b50:.2f} ms  p99 {b99:.2f} ms")
    print(
        f"approval -> usable share link:      p50 {l50:.2f} ms  p99 {l99:.2f} ms  "
        f"mean {statistics.mean(link) * 1000:.2f} ms"
    )
    print(f"ratio link/baseline: p50 {l50 / b50:.1f}x  p99 {l99 / b99:.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
