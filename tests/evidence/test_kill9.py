"""A 2xx-acknowledged event survives ``kill -9`` of a real ``supportbroker serve`` process,
with checkpoints on a cadence: the killed broker's unsigned tail is reported as not yet
covered (never as tampering), and the next start covers it. SQLite file, the product's CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "supportbroker"), *args], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "supportbroker"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not answer within 120 s")


def _post(port: int, path: str, token: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert 200 <= response.status < 300
        data: dict[str, object] = json.loads(response.read())
        return data


@pytest.mark.slow  # broker processes killed and restarted: half a minute on two cores
def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        SUPPORTBROKER_ENVIRONMENT="test",
        SUPPORTBROKER_SECRET_KEY="kill-nine-secret-" + "x" * 16,
        SUPPORTBROKER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}",
        SUPPORTBROKER_DATA_DIR=str(tmp_path / "data"),
        SUPPORTBROKER_GATEWAY_ENABLED="false",
        # No tick during the test: what the killed broker sealed stays unsigned.
        SUPPORTBROKER_CHECKPOINT_INTERVAL_SECONDS="3600",
        SUPPORTBROKER_SWEEP_INTERVAL_SECONDS="3600",
    )
    _cli(env, "migrate")
    _cli(env, "user", "create", "root", "--role", "admin")
    out = _cli(env, "token", "create", "--name", "t", "--user", "root", "--scope", "devices:write")
    token = out.rsplit("secret (shown only now):", 1)[1].split()[0]
    port = _free_port()
    broker = _serve(env, port)
    try:
        names = [f"acked-{i}" for i in range(5)]
        for name in names:  # each 201 acknowledges its group.created event
            _post(port, "/api/v1/device-groups", token, {"name": name})
    finally:
        broker.send_signal(signal.SIGKILL)
        broker.wait()
    with sqlite3.connect(tmp_path / "broker.db") as db:  # the header's type is cleartext
        sealed = db.execute(
            "SELECT count(*) FROM audit_records WHERE event_type = 'device_group.created'"
        ).fetchone()[0]
    assert sealed == len(names)  # every acknowledged event is there after kill -9
    before = _cli(env, "audit", "verify-log")
    assert before.startswith("OK:"), before
    assert "NOT YET COVERED" in before  # signed on a cadence: the tail was not signed yet
    broker = _serve(env, port)  # a new start; stopping it signs what is uncovered
    broker.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully (lifespan included), then re-raises the signal
    assert broker.wait(timeout=120) in (0, -signal.SIGTERM)
    after = _cli(env, "audit", "verify-log")
    assert after.startswith("OK:"), after
    assert "NOT YET COVERED" not in after
