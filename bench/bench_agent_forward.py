"""Port-forward throughput through agent + broker vs OpenSSH ``ssh -L`` on loopback.

Our path: sender → ``supportbroker connect --forward`` (technician side) → WebSocket → broker
(uvicorn + SSH gateway) → reverse-SSH channel → agent (separate process) → TCP sink.
Baselines, measured in the same run on the same machine: sender → ``ssh -L`` → a private sshd
(own host key and authorized key, 127.0.0.1 on a high port) → the same sink, once with the
cipher our agent links negotiate (``aes128-gcm@openssh.com``, the first of
``broker.gateway.server.LINK_CIPHERS``) and once with OpenSSH's default. All three forwards
stay up and the rounds are interleaved (ours, same cipher, default, ours, ...), so load from
other processes hits each alike. Each moves the same number of bytes; the sink acknowledges
the last one. Prints MiB/s per round, the best of each and the ratios (target ≥ 0.7 against
the same cipher). openssh-server is installed with apt-get if sshd is missing.

    .venv/bin/python bench/bench_agent_forward.py [--mb 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_agent_common import (
    ROOT,
    broker,
    device_id,
    enroll_agent,
    open_unattended,
    spawn_agent,
)

SAME_CIPHER = "aes128-gcm@openssh.com"  # the first of broker.gateway.server.LINK_CIPHERS

SINK = textwrap.dedent(
    """
    import socket, struct, sys
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(8)
    while True:
        c, _ = srv.accept()
        want = struct.unpack("!Q", c.recv(8, socket.MSG_WAITALL))[0]
        got = 0
        while got < want:
            b = c.recv(1 << 20)
            if not b: break
            got += len(b)
        c.sendall(b"k"); c.close()
    """
)
SENDER = textwrap.dedent(
    """
    import os, socket, struct, sys, time
    port, total = int(sys.argv[1]), int(sys.argv[2])
    for attempt in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port)); break
        except OSError:
            time.sleep(0.1)
    block = os.urandom(1 << 18)  # incompressible, like real remote-desktop traffic
    t0 = time.perf_counter()
    s.sendall(struct.pack("!Q", total))
    left = total
    while left > 0:
        n = min(left, len(block)); s.sendall(block[:n]); left -= n
    assert s.recv(1) == b"k"
    print(time.perf_counter() - t0)
    """
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hops(relay: int, agent: int) -> list[tuple[str, int]]:
    """The three Python processes the forwarded bytes cross, in order."""
    return [
        ("technician (connect --forward)", relay),
        ("broker (uvicorn + gateway)", os.getpid()),
        ("agent", agent),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def send(port: int, total: int) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER, str(port), str(total), stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit("sender failed")
    return float(out)


def ensure_sshd() -> str:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        print("installing openssh-server (apt-get)…", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server"], check=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    return sshd


@contextlib.contextmanager
def openssh_forward(tmp: Path, sink: int, cipher: str | None = None):
    sshd = ensure_sshd()
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True
        )
    (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
    port, local = free_port(), free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile {tmp / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nAllowTcpForwarding yes\n"
    )
    daemon = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    client = subprocess.Popen(
        ["ssh", *(["-c", cipher] if cipher else []),
         "-N", "-p", str(port), "-i", str(tmp / "client"), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:{sink}", f"{user}@127.0.0.1"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield local
    finally:
        client.terminate()
        daemon.terminate()
        client.wait()
        daemon.wait()


@contextlib.asynccontextmanager
async def ours(tmp: Path, sink: int) -> AsyncIterator[int]:
    """Our forward, up: yields the technician's local port (and prints each hop's CPU)."""
    async with broker(tmp, allowed_ports=[sink], unattended_allowed=True) as b:
        settings = await enroll_agent(b)
        agent = await spawn_agent(settings)
        relay = None
        try:
            dev = device_id(settings)
            # A forward needs its own right (it no longer rides on control).
            sid = await open_unattended(b, dev, ["forward"], "forward benchmark")
            local = free_port()
            code = (
                "import asyncio; from broker.gateway.cli import serve_forward; "
                f"asyncio.run(serve_forward({b.url!r}, {b.tech_token!r}, {sid!r}, {local}, {sink}))"
            )
            relay = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, cwd=str(ROOT), stdout=subprocess.DEVNULL
            )
            await send(local, 1 << 20)  # warm-up: connects, ticket, first channel
            before = {name: cpu_seconds(pid) for name, pid in hops(relay.pid, agent.pid)}
            yield local
            for name, pid in hops(relay.pid, agent.pid):
                used = cpu_seconds(pid) - before[name]
                print(f"  CPU {name:28s}: {used:5.2f} s over our rounds")
        finally:
            for proc in (relay, agent):
                if proc is not None and proc.returncode is None:
                    proc.kill()
                    await proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total = args.mb << 20
    print(f"nproc {os.cpu_count()}, load average {loadavg()}")
    names = ("ours", f"OpenSSH -c {SAME_CIPHER}", "OpenSSH default cipher")
    best = dict.fromkeys(names, float("inf"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sink_port = free_port()
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)])  # noqa: ASYNC220 - set-up
        try:
            with (
                openssh_forward(tmp / "same", sink_port, SAME_CIPHER) as same,
                openssh_forward(tmp / "default", sink_port) as default,
            ):
                async with ours(tmp / "broker", sink_port) as mine:
                    ports = dict(zip(names, (mine, same, default), strict=True))
                    for port in (same, default):
                        await send(port, 1 << 20)  # warm-up
                    for r in range(args.runs):
                        print(f"round {r + 1}: load average {loadavg()}", flush=True)
                        for name in names:
                            took = await send(ports[name], total)
                            best[name] = min(best[name], took)
                            print(f"  {name:34s}: {args.mb / took:8.1f} MiB/s", flush=True)
        finally:
            sink.kill()
    rates = {name: args.mb / t for name, t in best.items()}
    print(f"payload {args.mb} MiB, best of {args.runs} interleaved rounds")
    for name, rate in rates.items():
        print(f"{name:34s}: {rate:8.1f} MiB/s")
    print(f"ratio vs same cipher (target >= 0.7): {rates[names[0]] / rates[names[1]]:.2f}x")
    print(f"ratio vs OpenSSH default         : {rates[names[0]] / rates[names[2]]:.2f}x")
    print(f"load average {loadavg()}")


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    asyncio.run(main())
