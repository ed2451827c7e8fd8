"""Three ``supportbroker serve`` replicas on one PostgreSQL database behind HAProxy
(deploy/haproxy.cfg, as docs/DEPLOY.md runs it), with a real ``supportbroker-agent`` dialling
in through HAProxy's SSH port.

The service's identity is provided as docs/DEPLOY.md says: one secrets folder (a shared
mount in production) holds the KEK, the checkpoint key and the gateway's SSH key, and one
folder receives the published checkpoints; every replica is pointed at them by settings. The
keys are made once with ``supportbroker keys create``; the three replicas then start together
(one migrates and seals the identity while the others wait for its locks).
Heartbeats and leases are short, the signal fallback sweep is 60 s (a notice must do it).
Each replica reaches PostgreSQL through a relay of its own (tests/replicas/dbproxy.py), which
a test cuts to take that one replica off the database. One cluster serves the whole folder
(package scope): test_takeover.py runs after test_replicas.py, on what that left alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_HOST, PG_USER, _pg_admin, _pg_reachable
from tests.e2e.processes import BIN, Agent, Served, clean_env, enrolled_agent, free_port, serve
from tests.replicas.dbproxy import DbProxy

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
NAMES = ("a", "b", "c")
SECRET = "replica-test-" + secrets.token_urlsafe(24)
WEBHOOK_SECRET = "hook-" + secrets.token_urlsafe(16)


class Hook(BaseHTTPRequestHandler):
    """The ticket system: every delivery the outbox POSTs, kept in order."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:  # quiet
        return


@dataclass
class Cluster:
    replicas: dict[str, Served]
    database_url: str
    http: int
    ssh: int
    secrets_dir: Path
    publish_dir: Path
    settings: dict[str, str]
    haproxy: subprocess.Popen[bytes]
    haproxy_log: Path
    proxies: dict[str, DbProxy]  # each replica's way to PostgreSQL
    agents: list[Agent] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def sql(self, query: str, *args: Any) -> list[Any]:
        """Read the shared database (what an operator's ``psql`` shows)."""
        import asyncpg

        async def run() -> list[Any]:
            name = self.database_url.rsplit("/", 1)[1]
            conn = await asyncpg.connect(host=PG_HOST, user=PG_USER, database=name)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def live(self) -> dict[str, Served]:
        return {n: r for n, r in self.replicas.items() if r.proc.poll() is None}


def _replica_settings(root: Path, name: str, base: dict[str, str], url: str) -> dict[str, str]:
    (root / name).mkdir()
    return {**base, "SUPPORTBROKER_REPLICA_ID": name, "SUPPORTBROKER_DATABASE_URL": url}


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problem = _pg_reachable()
    if problem is not None:
        pytest.skip(f"PostgreSQL is not reachable ({problem}): the replica tests need it")
    root = tmp_path_factory.mktemp("replicas")
    db = f"sb_replicas_{secrets.token_hex(6)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{db}"'))
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{db}"
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    secrets_dir, publish_dir = root / "secrets", root / "checkpoints"
    connectors = {
        "helpdesk": {
            "kind": "webhook",
            "secret": WEBHOOK_SECRET,
            "url": f"http://127.0.0.1:{hook.server_address[1]}/events",
        }
    }
    base = {
        "SUPPORTBROKER_DATABASE_URL": url,
        "SUPPORTBROKER_SECRET_KEY": SECRET,  # cookies signed by one replica, read by another
        "SUPPORTBROKER_KEK_PATH": str(secrets_dir / "kek.json"),
        "SUPPORTBROKER_SIGNING_KEY_PATH": str(secrets_dir / "checkpoint-ed25519.pem"),
        "SUPPORTBROKER_GATEWAY_KEY_PATH": str(secrets_dir / "gateway_ed25519"),
        "SUPPORTBROKER_CHECKPOINT_PUBLISH_DIR": str(publish_dir),
        "SUPPORTBROKER_REPLICA_HEARTBEAT_SECONDS": "0.5",
        "SUPPORTBROKER_REPLICA_LEASE_SECONDS": "3",
        "SUPPORTBROKER_SIGNAL_FALLBACK_SECONDS": "60",
        "SUPPORTBROKER_CONNECTORS": json.dumps(connectors),
        "SUPPORTBROKER_TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    replicas: dict[str, Served] = {}
    proxies = {name: DbProxy(PG_HOST, 5432) for name in NAMES}
    haproxy: subprocess.Popen[bytes] | None = None
    try:
        made = subprocess.run(
            [str(BIN / "supportbroker"), "keys", "create"],
            env=clean_env(**base, SUPPORTBROKER_DATA_DIR=str(root / "keys-made")),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        assert "ssh-host-key: SHA256:" in made.stdout
        # All three at once, as an orchestrator starts them: one migrates and seals the
        # identity, the others wait for its locks and compare.
        started: dict[str, Served | BaseException] = {}

        def start(name: str) -> None:
            try:
                through = f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{proxies[name].port}/{db}"
                settings = _replica_settings(root, name, base, through)
                started[name] = serve(root / name, **settings)
            except BaseException as exc:  # reported below, in the test's thread
                started[name] = exc

        threads = [threading.Thread(target=start, args=(n,)) for n in NAMES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in NAMES:
            found = started[name]
            if isinstance(found, BaseException):
                raise found
            replicas[name] = found
        http, ssh = free_port(), free_port()
        env = clean_env(SB_HTTP_BIND=f"127.0.0.1:{http}", SB_SSH_BIND=f"127.0.0.1:{ssh}")
        for name, r in replicas.items():
            up = name.upper()
            env[f"SB_{up}_HTTP"] = f"127.0.0.1:{r.port}"
            env[f"SB_{up}_SSH"] = f"127.0.0.1:{r.gateway_port}"
            env[f"SB_{up}_CHECK_PORT"] = str(r.port)
        haproxy_log = root / "haproxy.log"
        haproxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(HAPROXY_CFG)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=haproxy_log.open("wb"),
        )
        found = Cluster(
            replicas, url, http, ssh, secrets_dir, publish_dir, base, haproxy, haproxy_log, proxies
        )
        _until_balanced(found)
        yield found
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        for r in replicas.values():
            with contextlib.suppress(Exception):
                r.stop()
        for proxy in proxies.values():
            proxy.close()
        hook.shutdown()
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def _until_balanced(cluster: Cluster) -> None:
    import time

    import httpx

    for _ in range(100):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{cluster.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError("HAProxy never answered /readyz")


def enroll_through_balancer(cluster: Cluster, tmp: Path, group: str) -> Agent:
    """The agent is given the load balancer's SSH address, like any admin would give it."""
    agent = enrolled_agent(cluster.replicas["a"], tmp, group, ssh_port=cluster.ssh)
    cluster.agents.append(agent)
    return agent


def env_of(cluster: Cluster, **more: str) -> dict[str, str]:
    return clean_env(**cluster.settings, **more) | {"PATH": os.environ.get("PATH", "")}
