"""Shared set-up for the agent benchmarks: a broker (app + SSH gateway + uvicorn) on loopback,
a technician with a token, a device group, and enrolled agents. Not a benchmark itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import load_enrollment  # noqa: E402
from agent.runner import enroll  # noqa: E402
from broker.app import create_app  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.db import migrate  # noqa: E402
from broker.logging import configure_logging  # noqa: E402
from tests.factories import make_group, make_token, make_user  # noqa: E402
from tests.gateway.helpers import ScriptedPrompter, agent_settings, new_token  # noqa: E402


@dataclass
class Broker:
    app: Any
    url: str
    gateway: Any
    tech_token: str
    group: Any
    tmp: Path


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextlib.asynccontextmanager
async def broker(
    tmp: Path, *, gateway_port: int = 0, migrate_db: bool = True, **group_policy: Any
) -> AsyncIterator[Broker]:
    import uvicorn

    url = f"sqlite+aiosqlite:///{tmp / 'broker.db'}"
    if migrate_db:
        await asyncio.to_thread(migrate.upgrade, url)
    settings = Settings(
        environment="test",
        database_url=url,
        data_dir=tmp / "data",
        secret_key=SecretStr("bench-secret-key-" + "x" * 16),
        sweep_interval_seconds=3600.0,
        gateway_enabled=True,
        gateway_port=gateway_port,
        log_format="console",
    )
    app = create_app(settings)
    configure_logging("console", logging.WARNING)  # benchmarks print figures, not chatter
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    async with app.router.lifespan_context(app):
        tech, _ = await make_user(app, "technician")
        group = await make_group(app, [tech], **group_policy)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan="off", log_config=None, log_level="warning"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield Broker(
                app,
                f"http://127.0.0.1:{port}",
                app.state.gateway,
                await make_token(app, tech),
                group,
                tmp,
            )
        finally:
            server.should_exit = True
            await task


async def enroll_agent(b: Broker, name: str = "") -> Any:
    """Enroll one agent (real SSH handshake); returns its AgentSettings (config dir on disk)."""
    settings = agent_settings(b.tmp, backoff_initial=0.2, backoff_max=2.0)
    token = await new_token(b.app, b.group.name)
    await enroll(settings, f"127.0.0.1:{b.gateway.port}", token, ScriptedPrompter())
    return settings


def device_id(settings: Any) -> str:
    return str(load_enrollment(settings).device_id)


def agent_env(settings: Any) -> dict[str, str]:
    return dict(
        os.environ,
        SUPPORTBROKER_AGENT_CONFIG_DIR=str(settings.config_dir),
        SUPPORTBROKER_AGENT_NOTIFY="false",
        SUPPORTBROKER_AGENT_BACKOFF_INITIAL="0.2",
        SUPPORTBROKER_AGENT_BACKOFF_MAX="2",
        PYTHONPATH=str(ROOT),
    )


async def spawn_agent(
    settings: Any, *, stdout: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """``supportbroker-agent run`` in its own process; its stdin is the user's terminal
    (``PIPE`` for ``stdout`` lets a benchmark read the consent prompt)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        "run",
        env=agent_env(settings),
        stdin=asyncio.subprocess.PIPE,
        stdout=stdout,
        stderr=asyncio.subprocess.DEVNULL,
    )


class Terminal:
    """The end user's terminal for an agent: a pseudo-terminal, so the agent sees a person
    who can answer (it prompts only on a terminal) and a benchmark can read and type."""

    def __init__(self, master: int, reader: asyncio.StreamReader) -> None:
        self.master = master
        self.reader = reader

    async def readuntil(self, text: bytes) -> bytes:
        return await self.reader.readuntil(text)

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> None:
        os.close(self.master)


async def spawn_agent_on_terminal(settings: Any) -> tuple[asyncio.subprocess.Process, Terminal]:
    """``supportbroker-agent run`` with a terminal for stdin and stdout, no desktop (its
    consent prompt is the terminal's)."""
    master, slave = os.openpty()
    env = agent_env(settings)
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        "run",
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=asyncio.subprocess.DEVNULL,
    )
    os.close(slave)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", buffering=0)
    )
    return proc, Terminal(os.dup(master), reader)


async def open_unattended(b: Broker, dev: str, capabilities: list[str], reason: str) -> str:
    """An unattended session on the agent's device once its link is up, the way a
    technician's API call asks for it; its id, after the poller handed the agent its grant."""
    import httpx

    while dev not in b.gateway.links:  # noqa: ASYNC110 - a dict, not an event
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=b.url) as client:
        resp = await client.post(
            "/api/v1/sessions",
            headers={"Authorization": f"Bearer {b.tech_token}"},
            json={
                "ticket": {"system": "standalone", "external_id": "HD-1", "subject": "x"},
                "device_id": dev,
                "reason": reason,
                "capabilities": capabilities,
                "duration_minutes": 60,
                "unattended": True,
            },
        )
        resp.raise_for_status()
    await asyncio.sleep(1.5)  # the poller hands the unattended grant to the agent
    return str(resp.json()["id"])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
