"""Idle agents one broker holds: broker RSS per connected agent, and the time for all of them
to reconnect after the broker (and its gateway) restarts.

The broker runs in its own process (``--serve``) on SQLite; the device keys are generated here
and registered in bulk (enrollment is measured by the tests, not here). N agents run as asyncio
tasks in a few worker processes, each a real ``asyncssh.connect_reverse`` agent (``AgentCore``)
with the agent's default keep-alive and jittered back-off (1 s doubling to 60 s).
Baseline, measured in the same run: the broker's RSS
with no agent connected. Targets: >= 10,000 agents, <= 150 KiB each.

    .venv/bin/python bench/bench_agent_idle.py [-n 10000] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_agent_common import ROOT, broker, rss_kib


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(tmp: Path, port: int, first: bool) -> None:
    """Broker process: register the keys (first start), then report connected agents."""
    from broker.devices.models import Device
    from broker.gateway.models import AgentKey

    _raise_nofile()
    async with broker(tmp, gateway_port=port, migrate_db=first) as b:
        if first:
            keys = json.loads((tmp / "keys.json").read_text())
            async with b.app.state.sessionmaker() as db:
                for i, (fp, public) in enumerate(keys):
                    device = Device(
                        name=f"pc-{i}", group_id=b.group.id, provider="agent", provider_device_id=fp
                    )
                    db.add(device)
                    await db.flush()
                    db.add(AgentKey(device_id=device.id, fingerprint=fp, public_key=public))
                await db.commit()
        (tmp / "gateway.json").write_text(
            json.dumps({"port": b.gateway.port, "fingerprint": b.gateway.fingerprint})
        )
        while True:
            (tmp / "links.tmp").write_text(str(len(b.gateway.links)))
            os.replace(tmp / "links.tmp", tmp / "links")
            await asyncio.sleep(0.2)


async def agents(tmp: Path, start: int, count: int) -> None:
    """Worker process: ``count`` agents from keys[start:], each dialling and re-dialling."""
    import asyncssh

    from agent.config import AgentSettings
    from agent.runner import Backoff, _dial
    from agent.server import AgentCore
    from tests.gateway.helpers import ScriptedPrompter

    _raise_nofile()
    gw = json.loads((tmp / "gateway.json").read_text())
    settings = AgentSettings(config_dir=tmp / "unused")
    secrets_ = json.loads((tmp / "private.json").read_text())[start : start + count]

    # Agents come online a few at a time (a fleet does not boot in the same millisecond);
    # after a failure each one redials with the agent's own jittered back-off (defaults).
    first_dials = asyncio.Semaphore(8)

    async def one(private: str) -> None:
        key = asyncssh.import_private_key(private)
        core = AgentCore(key, ScriptedPrompter(), pinned=gw["fingerprint"], device_id="x")
        backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        first = True
        while True:
            try:
                if first:
                    async with first_dials:
                        conn = await _dial(core, settings, "127.0.0.1", gw["port"])
                else:
                    conn = await _dial(core, settings, "127.0.0.1", gw["port"])
            except Exception:  # any failure: back off and dial again, like the agent does
                first = False
                await asyncio.sleep(backoff.next_delay())
                continue
            first = False
            backoff.reset()
            await conn.wait_closed()
            await asyncio.sleep(backoff.next_delay())

    await asyncio.gather(*(one(private) for private in secrets_))


def _links(tmp: Path) -> int:
    try:
        return int((tmp / "links").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    # SB_BENCH_LOG=path keeps the children's warnings (dropped links, refused agents).
    log = os.environ.get("SB_BENCH_LOG")
    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - lives with the child
    return subprocess.Popen([sys.executable, __file__, *args], cwd=str(ROOT), stderr=err)


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--serve", default=None)
    parser.add_argument("--first", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--agents", nargs=3, default=None)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve), args.port, args.first))
        return
    if args.agents:
        tmp, start, count = args.agents
        asyncio.run(agents(Path(tmp), int(start), int(count)))
        return

    import asyncssh

    from broker.gateway.keys import fingerprint

    n = args.n
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        keys = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(n)]
        (tmp / "keys.json").write_text(
            json.dumps(
                [(fingerprint(k), k.export_public_key("openssh").decode().strip()) for k in keys]
            )
        )
        (tmp / "private.json").write_text(
            json.dumps([k.export_private_key().decode() for k in keys])
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = _spawn("--serve", d, "--first", "--port", str(port))
        workers: list[subprocess.Popen[bytes]] = []
        try:
            assert _wait((tmp / "links").exists, 120), "broker did not start"
            time.sleep(2)
            base = rss_kib(server.pid)
            per = -(-n // args.workers)
            t0 = time.monotonic()
            for w in range(args.workers):
                workers.append(_spawn("--agents", d, str(w * per), str(min(per, n - w * per))))
            ok = _wait(lambda: _links(tmp) >= n, 900)
            connect_s = time.monotonic() - t0
            held = _links(tmp)
            time.sleep(3)
            full = rss_kib(server.pid)
            print(f"agents connected      : {held} of {n} ({'all' if ok else 'NOT all'})")
            print(f"first connect of all  : {connect_s:.1f} s")
            print(f"broker RSS, no agents : {base / 1024:.1f} MiB (baseline)")
            print(f"broker RSS, {held} agents: {full / 1024:.1f} MiB")
            print(f"RSS per agent         : {(full - base) / max(held, 1):.1f} KiB (target <= 150)")
            server.send_signal(signal.SIGKILL)  # a crash, not a polite shutdown
            server.wait()
            (tmp / "links").unlink()
            t1 = time.monotonic()
            server = _spawn("--serve", d, "--port", str(port))
            ok = _wait(lambda: _links(tmp) >= n, 900)
            print(
                f"reconnect after kill  : {time.monotonic() - t1:.1f} s for {_links(tmp)} agents"
                f" ({'all' if ok else 'NOT all'}; includes the broker's start-up)"
            )
        finally:
            for proc in [server, *workers]:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
