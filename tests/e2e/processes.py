"""The product as people start it: ``supportbroker serve``, its command line, and a
``supportbroker-agent`` running in a terminal of its own (a pseudo-terminal, as on a desk).

:func:`serve` starts the broker the way the README says: ``supportbroker serve`` with the
HTTP port, the SSH gateway port and the data folder from ``SUPPORTBROKER_PORT``,
``SUPPORTBROKER_GATEWAY_PORT`` and ``SUPPORTBROKER_DATA_DIR``, and reads what it prints
(where to log in, the first admin's one-time password). Data is made only through the
product's own command line (:meth:`Served.cli`) and API.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

BIN = Path(sys.executable).parent
START_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any SUPPORTBROKER_* of the shell running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBROKER_")}
    env.update(values)
    return env


class Output:
    """Everything a process writes to one stream, read by a thread; waited on by content."""

    def __init__(self, stream: IO[bytes] | int) -> None:
        self._text = ""
        self._lock = threading.Condition()
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _read(self) -> bytes:
        if isinstance(self._stream, int):
            try:
                return os.read(self._stream, 4096)
            except OSError:  # the terminal's other side closed
                return b""
        return self._stream.read1(4096)  # type: ignore[attr-defined,no-any-return]

    def _pump(self) -> None:
        while chunk := self._read():
            with self._lock:
                self._text += chunk.decode(errors="replace")
                self._lock.notify_all()

    @property
    def text(self) -> str:
        with self._lock:
            return self._text

    def mark(self) -> int:
        """Where the output is now: wait for text that comes after this."""
        return len(self.text)

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self._lock:
            while True:
                found = regex.search(self._text, after)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} in: {self._text[after:][-2000:]!r}")
                self._lock.wait(left)


@dataclass
class Served:
    """A running ``supportbroker serve`` and what it printed."""

    proc: subprocess.Popen[bytes]
    out: Output
    env: dict[str, str]
    data_dir: Path
    port: int
    gateway_port: int
    log: Path
    login_url: str = ""
    admin_password: str = ""
    agents: list[Agent] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``supportbroker ARGS`` against this broker's settings (as its operator runs it)."""
        done = subprocess.run(  # noqa: PLW1510 - checked below with the output in the message
            [str(BIN / "supportbroker"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"supportbroker {' '.join(args)}: {done.stderr or done.stdout}")
        return done

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve(tmp: Path, **settings: str) -> Served:
    """``supportbroker serve`` on free ports with its data in ``tmp/data``; returns once it
    answers /readyz (the first run creates the admin and prints its one-time password).
    ``settings`` adds ``SUPPORTBROKER_*`` variables (e.g. a PostgreSQL database URL)."""
    data_dir, log = tmp / "data", tmp / "serve.log"
    port, gateway_port = free_port(), free_port()
    env = clean_env(
        SUPPORTBROKER_PORT=str(port),
        SUPPORTBROKER_GATEWAY_PORT=str(gateway_port),
        SUPPORTBROKER_DATA_DIR=str(data_dir),
        SUPPORTBROKER_SWEEP_INTERVAL_SECONDS="1",
        **settings,
    )
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            [str(BIN / "supportbroker"), "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            cwd=tmp,
        )
    assert proc.stdout is not None
    served = Served(proc, Output(proc.stdout), env, data_dir, port, gateway_port, log)
    try:
        served.login_url = served.out.wait_for(r"log in:\s+(\S+)").group(1)
        found = served.out.wait_for(r"one-time password: (\S+)|forgot a password")
        served.admin_password = found.group(1) or ""
        _until_ready(served)
    except BaseException:
        served.stop()
        raise
    return served


def _until_ready(served: Served) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            raise AssertionError(f"supportbroker serve exited: {served.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{served.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"supportbroker serve not ready: {served.log.read_text()[-3000:]}")


class Agent:
    """``supportbroker-agent run`` in a terminal of its own: the person at the device reads
    its prompt (``out``) and types into it (:meth:`type`)."""

    def __init__(self, config_dir: Path, env: dict[str, str]) -> None:
        self.config_dir = config_dir
        leader, follower = pty.openpty()
        self.proc = subprocess.Popen(
            [str(BIN / "supportbroker-agent"), "run"],
            env=env,
            stdin=follower,
            stdout=follower,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        os.close(follower)
        self._terminal = leader
        self.out = Output(leader)

    def type(self, text: str) -> None:
        os.write(self._terminal, text.encode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self._terminal)


def enrolled_agent(served: Served, tmp: Path, group: str, *, ssh_port: int | None = None) -> Agent:
    """An enrollment token from the broker's command line, ``supportbroker-agent enroll``
    with it (at ``ssh_port``, e.g. a load balancer's; the broker's own by default), then the
    agent running in its terminal."""
    issued = served.cli("agent", "token", "create", "--group", group).stdout
    token = issued.strip().splitlines()[-1]
    env = clean_env(
        SUPPORTBROKER_AGENT_CONFIG_DIR=str(tmp / "agent"),
        SUPPORTBROKER_AGENT_NOTIFY="false",
        SUPPORTBROKER_AGENT_SHELL_COMMAND="/bin/sh",
        SUPPORTBROKER_AGENT_BACKOFF_INITIAL="0.2",
        SUPPORTBROKER_AGENT_BACKOFF_MAX="1",
    )
    enroll = subprocess.run(
        [
            str(BIN / "supportbroker-agent"),
            "enroll",
            "--broker",
            f"127.0.0.1:{ssh_port or served.gateway_port}",
            "--token",
            token,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert enroll.returncode == 0, enroll.stderr
    agent = Agent(tmp / "agent", env)
    served.agents.append(agent)
    return agent


def created_password(output: str) -> str:
    """The one-time password ``supportbroker user create`` printed."""
    found = re.search(r"one-time password: (\S+)", output)
    assert found, output
    return found.group(1)


def api(served: Served, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def wait_state(client: httpx.Client, session_id: str, want: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(f"/api/v1/sessions/{session_id}").json()
        if found["state"] == want:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"session {session_id} is {found['state']}, wanted {want}")
        time.sleep(0.2)
