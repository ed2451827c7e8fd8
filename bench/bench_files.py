"""File transfer throughput through the broker vs ``scp`` over OpenSSH on loopback.

Our path: the technician's side (``broker.gateway.files_cli``, what ``supportbroker connect
--put/--get`` runs, in its own process) → HTTP → broker (uvicorn + SSH gateway, hashing every
byte) → SFTP over the reverse-SSH link → agent (separate process, hashing the file on its
disk). Baseline, in the same run on the same machine: ``scp`` to and from a private sshd
(own host key and authorized key, 127.0.0.1 on a high port) with the cipher our links
negotiate. Rounds are interleaved (ours, scp, ours, ...) so load from other processes hits
both alike; each moves the same file. Prints MiB/s per round, the best of each and the ratio
(target >= 0.5). openssh-server is installed with apt-get if sshd is missing.

    .venv/bin/python bench/bench_files.py [--mb 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_agent_common import (
    ROOT,
    Broker,
    broker,
    device_id,
    enroll_agent,
    open_unattended,
    spawn_agent,
)
from bench_agent_forward import SAME_CIPHER, ensure_sshd, free_port, loadavg

TIMED = """
import sys, time
from broker.gateway import files_cli
url, token, sid, verb, a, b = sys.argv[1:]
start = time.monotonic()
getattr(files_cli, verb)(url, token, sid, a, b)
print(time.monotonic() - start)
"""


@contextlib.contextmanager
def sshd(tmp: Path) -> Iterator[list[str]]:
    """A private sshd; yields the scp command prefix that reaches it."""
    daemon_bin = ensure_sshd()
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True
        )
    (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile {tmp / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nSubsystem sftp internal-sftp\n"
    )
    daemon = subprocess.Popen(
        [daemon_bin, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    try:
        yield ["scp", "-q", "-c", SAME_CIPHER, "-P", str(port), "-i", str(tmp / "client"),
               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null"]  # fmt: skip
    finally:
        daemon.terminate()
        daemon.wait()


async def scp(prefix: list[str], src: str, dst: str) -> float:
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*prefix, src, dst)
    if await proc.wait() != 0:
        raise SystemExit("scp failed")
    return time.monotonic() - start


async def ours(url: str, token: str, sid: str, verb: str, a: str, b: str) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TIMED, url, token, sid, verb, a, b,
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"our {verb} failed")
    return float(out.splitlines()[-1])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"nproc {os.cpu_count()}, load average {loadavg()}")
    user = getpass.getuser()
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shared = tmp / "shared"
        shared.mkdir()
        source = tmp / "payload.bin"
        source.write_bytes(os.urandom(args.mb << 20))
        with sshd(tmp / "ssh") as prefix:
            policy = {"allowed_paths": [str(shared)], "unattended_allowed": True}
            async with broker(tmp / "broker", **policy) as b:
                settings = await enroll_agent(b)
                agent = await spawn_agent(settings)
                try:
                    sid = await _session(b, device_id(settings))
                    for r in range(args.runs):
                        print(f"round {r + 1}: load average {loadavg()}", flush=True)
                        took = {
                            "ours upload": await ours(b.url, b.tech_token, sid, "put",
                                                      str(source), f"{shared}/up.bin"),
                            "scp upload": await scp(prefix, str(source),
                                              f"{user}@127.0.0.1:{shared}/scp-up.bin"),
                            "ours download": await ours(b.url, b.tech_token, sid, "get",
                                                        f"{shared}/up.bin", str(tmp / "down.bin")),
                            "scp download": await scp(prefix, f"{user}@127.0.0.1:{shared}/up.bin",
                                                str(tmp / "scp-down.bin")),
                        }  # fmt: skip
                        for name, seconds in took.items():
                            best[name] = min(best.get(name, float("inf")), seconds)
                            print(f"  {name:14s}: {args.mb / seconds:8.1f} MiB/s", flush=True)
                        assert (tmp / "down.bin").read_bytes() == source.read_bytes()
                finally:
                    agent.kill()
                    await agent.wait()
    rates = {name: args.mb / t for name, t in best.items()}
    print(f"payload {args.mb} MiB, best of {args.runs} interleaved rounds")
    for name, rate in rates.items():
        print(f"{name:14s}: {rate:8.1f} MiB/s")
    for way in ("upload", "download"):
        ratio = rates[f"ours {way}"] / rates[f"scp {way}"]
        print(f"ratio {way:8s} vs scp -c {SAME_CIPHER} (target >= 0.5): {ratio:.2f}x")
    print(f"load average {loadavg()}")


async def _session(b: Broker, dev: str) -> str:
    """An unattended session approved for files on the agent's device."""
    return await open_unattended(b, dev, ["files"], "file transfer benchmark")


if __name__ == "__main__":
    asyncio.run(main())
