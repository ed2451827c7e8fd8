"""A real ``supportbroker serve`` killed with SIGKILL mid-delivery shows no duplicate in the desk.

The desk is the Zammad fake served over HTTP on loopback (tests/connectors/fakes/server.py).
A session's story is queued (request, consent, start, end, evidence); the broker process
delivers it from its background loop. The fake stores the "start" note and then holds its
answer: the broker is in the middle of that delivery when it is killed. The restarted broker
finds the lease run out, reads the ticket's articles back, sees the note's marker, and goes
on with the next note instead of posting "start" again. SQLite, as a single broker runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.app import create_app
from broker.config import Settings
from broker.connectors import registry as registry_mod
from broker.connectors.registry import ConnectorRegistry
from tests.connectors.conftest import mount
from tests.connectors.fakes.server import LiveFake, free_port, serving
from tests.connectors.fakes.zammad import TOKEN, FakeZammad
from tests.connectors.test_session_flow import act, decide, on
from tests.factories import make_desk

STEPS = ["request", "consent", "start", "end", "evidence"]
MARKER = re.compile(r"\[supportbroker-ref [^/\]]+/([a-z0-9-]+)\]")
SECRET = "crash-test-secret-" + "c" * 16


def markers(fake: FakeZammad) -> list[str]:
    found = [MARKER.search(n["text"]) for n in list(fake.notes)]
    return [m.group(1) for m in found if m]


def holds_start(request: httpx.Request) -> bool:
    return request.method == "POST" and b"/start]" in request.content


@pytest.fixture
def live() -> Iterator[LiveFake]:
    fake = FakeZammad()
    fake.add(11, title="Printer on fire", state="open", owner="tom")
    with serving(LiveFake(fake, holds_start)) as running:
        yield running


def environment(tmp_path: Path, db: Path, desk_url: str, port: int) -> dict[str, str]:
    connectors = {
        "zammad": {
            "kind": "zammad",
            "base_url": desk_url,
            "token": TOKEN,
            "timeout_seconds": 5,
            "delivery_lease_seconds": 2,
            "watch_interval_seconds": 0,
        }
    }
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBROKER_")},
        "SUPPORTBROKER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "SUPPORTBROKER_DATA_DIR": str(tmp_path / "data"),
        "SUPPORTBROKER_ENVIRONMENT": "test",
        "SUPPORTBROKER_SECRET_KEY": SECRET,
        "SUPPORTBROKER_HOST": "127.0.0.1",
        "SUPPORTBROKER_PORT": str(port),
        "SUPPORTBROKER_GATEWAY_ENABLED": "false",
        "SUPPORTBROKER_SWEEP_INTERVAL_SECONDS": "0.3",
        "SUPPORTBROKER_LOG_FORMAT": "console",
        "SUPPORTBROKER_CONNECTORS": json.dumps(connectors),
    }


async def queue_a_story(env: dict[str, str], desk_url: str) -> str:
    """Request, approve, start and end a session through the broker's API (in this process,
    with its background loop idle): five notes wait in the outbox."""
    settings = Settings(
        environment="test",
        database_url=env["SUPPORTBROKER_DATABASE_URL"],
        data_dir=Path(env["SUPPORTBROKER_DATA_DIR"]),
        secret_key=SECRET,
        sweep_interval_seconds=3600,
        gateway_enabled=False,
    )
    entry = json.loads(env["SUPPORTBROKER_CONNECTORS"])
    registry = ConnectorRegistry(entry, broker_url="http://broker.test")
    registry_mod.install(registry)
    app = mount(create_app(settings))
    try:
        async with app.router.lifespan_context(app):
            desk = await make_desk(app)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                response = await client.post(
                    "/api/v1/sessions",
                    json={
                        **on("11", "zammad"),
                        "device_id": desk.device.id,
                        "reason": "Printer driver keeps crashing after the update",
                        "capabilities": ["view", "control"],
                        "duration_minutes": 30,
                    },
                    headers=desk.headers,
                )
                assert response.status_code == 201, response.text
                created: dict[str, Any] = response.json()
                await decide(client, created, "approve")
                await act(client, desk, created["id"], "start")
                await act(client, desk, created["id"], "end", reason="driver reinstalled")
            return str(created["id"])
    finally:
        registry_mod.install(None)
        await registry.aclose()


def start_broker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    command = [sys.executable, "-m", "broker.cli", "serve"]
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def until(condition: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the broker exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow  # two broker processes, one killed: half a minute on two cores
def test_a_broker_killed_mid_delivery_posts_no_duplicate(
    tmp_path: Path, sqlite_template: Path, live: LiveFake
) -> None:
    db = tmp_path / "broker.db"
    shutil.copy(sqlite_template, db)
    env = environment(tmp_path, db, live.url, free_port())
    session_id = asyncio.run(queue_a_story(env, live.url))
    fake = live.fake
    assert isinstance(fake, FakeZammad)
    assert markers(fake) == []  # queued, not sent: the in-process broker's loop is idle
    log = tmp_path / "broker.log"

    first = start_broker(env, log)
    try:
        until(live.held.is_set, "the start note to reach the desk", first, log)
        first.send_signal(signal.SIGKILL)  # mid-delivery: the desk has it, the broker not
        first.wait(timeout=30)
    finally:
        stop(first)
    assert first.returncode == -signal.SIGKILL
    assert markers(fake) == ["request", "consent", "start"]
    live.release.set()

    second = start_broker(env, log)
    try:
        until(lambda: markers(fake)[-1:] == ["evidence"], "the rest of the story", second, log)
    finally:
        stop(second)
    assert markers(fake) == STEPS  # "start" once, everything in order
    assert all(f"[supportbroker-ref {session_id}/" in n["text"] for n in fake.notes)
    # The restarted broker asked the desk before it would have posted "start" again.
    assert ("GET", "/api/v1/ticket_articles/by_ticket/11") in fake.calls
