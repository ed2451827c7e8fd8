"""A real MeshCentral 1.1.55 on loopback for integration tests and the benchmark.

Installed once into a cache folder (``~/.cache/supportbroker/meshcentral-1.1.55`` or
``$SUPPORTBROKER_MESHCENTRAL_CACHE``) and reused across runs; each run gets its own directory
whose ``node_modules`` is a hard-linked copy of the cache (MeshCentral keeps its data next to
``node_modules``), a config that binds 127.0.0.1 and phones nowhere, and an admin account
created offline. Started with stdin kept open, stopped with SIGINT by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect

from broker.providers.meshcentral.cookie import mint_login_cookie

VERSION = "1.1.55"
IMAGE_SIZE = "2.0.2"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "Adm1n-Test!pw"


@dataclass
class MeshServer:
    directory: Path
    port: int
    login_key_hex: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "supportbroker" / f"meshcentral-{VERSION}"
    return Path(os.environ.get("SUPPORTBROKER_MESHCENTRAL_CACHE", default))


def node_missing() -> str | None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def install() -> Path:
    """npm install MeshCentral into the cache once; later runs find it there."""
    cache = cache_dir()
    package = cache / "node_modules" / "meshcentral" / "package.json"
    if package.exists() and json.loads(package.read_text())["version"] == VERSION:
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "package.json").exists():
        (cache / "package.json").write_text('{"private": true}\n')
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--save-exact",
            f"meshcentral@{VERSION}",
            f"image-size@{IMAGE_SIZE}",
        ],
        cwd=cache,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return cache


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(directory: Path, port: int, key: str) -> dict[str, object]:
    return {
        "settings": {
            "cert": "mc.localhost",  # needs a dot, else LAN mode starts scanners
            "port": port,
            "portBind": "127.0.0.1",
            "redirPort": 0,
            "mpsPort": 0,
            "exactPorts": True,
            "tlsOffload": "127.0.0.1",
            "selfUpdate": False,
            "noAgentUpdate": True,
            "autoBackup": False,
            "meshScanner": False,
            "amtScanner": False,
            "amtManager": False,
            "agentTimeStampServer": False,
            "allowLoginToken": True,
            "loginCookieEncryptionKey": key,
            "webrtcConfig": {"iceServers": []},
        },
        "domains": {
            "": {
                "title": "Broker integration test",
                "newAccounts": False,
                "guestDeviceSharing": True,
                "sessionRecording": {
                    "protocols": [1, 2, 5],
                    "filepath": str(directory / "recordings"),
                    "index": True,
                },
            }
        },
    }


def prepare(base: Path) -> MeshServer:
    """A run directory with config and admin account; the server is not started."""
    cache = install()
    directory = base / f"mc-{secrets.token_hex(4)}"
    (directory / "meshcentral-data").mkdir(parents=True)
    (directory / "recordings").mkdir()
    shutil.copytree(
        cache / "node_modules", directory / "node_modules", copy_function=os.link, symlinks=True
    )
    key = secrets.token_hex(80)
    port = free_port()
    (directory / "meshcentral-data" / "config.json").write_text(
        json.dumps(_config(directory, port, key), indent=2)
    )
    node = ["node", "node_modules/meshcentral"]
    for extra in (
        [
            "--createaccount",
            ADMIN_USER,
            "--pass",
            ADMIN_PASSWORD,
            "--email",
            "admin@example.test",
            "--name",
            "Admin",
        ],
        ["--adminaccount", ADMIN_USER],
    ):
        subprocess.run(
            node + extra,
            cwd=directory,
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    return MeshServer(directory=directory, port=port, login_key_hex=key)


def start(server: MeshServer, timeout: float = 60.0) -> MeshServer:
    log = (server.directory / "server.log").open("wb")
    server.process = subprocess.Popen(
        ["node", "node_modules/meshcentral", "--launch"],
        cwd=server.directory,
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"MeshCentral exited with {server.process.returncode}: "
                f"{(server.directory / 'server.log').read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/health.ashx", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"MeshCentral did not answer /health.ashx within {timeout}s")


def stop(server: MeshServer) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    if process.stdin is not None:
        process.stdin.close()


async def local_relay(server: MeshServer, nodeid: str, *, hold: float = 1.1) -> None:
    """Connect to an agentless device (host 127.0.0.1) through MeshCentral's local relay as
    the admin account, not through any share: MeshCentral writes ``relaylog`` 120 and 121 for
    it, exactly as for any connection the broker did not arrange."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        await reader.read(100)  # until the relay hangs up
        writer.close()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    cookie = mint_login_cookie(bytes.fromhex(server.login_key_hex), ADMIN_USER)
    url = (
        f"ws://127.0.0.1:{server.port}/localrelay.ashx?auth={cookie}"
        f"&nodeid={nodeid}&tcpport={port}&p=14"
    )
    try:
        async with connect(url, open_timeout=10) as ws:
            assert await asyncio.wait_for(ws.recv(), 10) == "c"  # MeshCentral: connected
            await ws.send(b"hello")
            assert await asyncio.wait_for(ws.recv(), 10) == b"hello"
            await asyncio.sleep(hold)  # MeshCentral counts the duration in whole seconds
    finally:
        target.close()
