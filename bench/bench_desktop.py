"""The screen through broker + agent against the same x11vnc reached through websockify.

Two figures, each against a baseline measured in the same run, rounds interleaved:
- frame relay throughput: an RFB viewer asks for N full frames (Raw encoding, so the bytes
  relayed, not x11vnc's encoder, are what is measured) and reads them; MiB/s;
- added latency of one input event: the viewer sends a PointerEvent and polls the X server
  (``XQueryPointer`` through libX11) until the pointer is there; p50/p99 per path.

Processes: Xvfb; x11vnc (started here, one password); ``websockify`` (Debian) in front of it
for the baseline; the broker (app, SSH gateway, uvicorn) in this process; the agent
(``supportbroker-agent run``, ``SUPPORTBROKER_AGENT_DESKTOP=attach`` to the same x11vnc,
consent answered at its terminal prompt); the viewer runs as its own process (``--viewer``).

    .venv/bin/python bench/bench_desktop.py [--rounds 3] [--frames 40] [--events 100]

``BENCH_X11VNC="-defer 1 -wait 5"`` passes extra flags to the x11vnc both paths share.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.vncauth import vnc_response  # noqa: E402

WIDTH, HEIGHT = 1280, 800
PASSWORD = "benchpw1"
X11VNC_EXTRA = os.environ.get("BENCH_X11VNC", "").split()
PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


# --- the viewer (its own process) ---------------------------------------------------------


class XPointer:
    """The X server's pointer, read with XQueryPointer (no process per reading)."""

    def __init__(self, display: str) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
        lib.XOpenDisplay.restype = ctypes.c_void_p
        lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        lib.XDefaultRootWindow.restype = ctypes.c_ulong
        lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        ulong, c_int, uint = ctypes.c_ulong, ctypes.c_int, ctypes.c_uint
        lib.XQueryPointer.argtypes = [ctypes.c_void_p, ulong] + [ctypes.POINTER(ulong)] * 2
        lib.XQueryPointer.argtypes += [ctypes.POINTER(c_int)] * 4 + [ctypes.POINTER(uint)]
        self.lib = lib
        self.dpy = lib.XOpenDisplay(display.encode())
        assert self.dpy, f"cannot open display {display}"
        self.root = lib.XDefaultRootWindow(self.dpy)
        self._w = [ctypes.c_ulong(), ctypes.c_ulong()]
        self._i = [ctypes.c_int() for _ in range(4)]
        self._m = ctypes.c_uint()

    def where(self) -> tuple[int, int]:
        w, i = self._w, self._i
        self.lib.XQueryPointer(
            self.dpy, self.root, *(ctypes.byref(x) for x in w),
            *(ctypes.byref(x) for x in i), ctypes.byref(self._m),
        )  # fmt: skip
        return i[0].value, i[1].value


class Viewer:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.buf = bytearray()
        self.ttfb: list[float] = []

    async def read(self, size: int) -> bytes:
        while len(self.buf) < size:
            self.buf += await self.ws.recv()
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    async def skip(self, size: int) -> None:
        """Read and drop ``size`` bytes without copying them around more than once."""
        while size > 0:
            if not self.buf:
                self.buf += await self.ws.recv()
            take = min(size, len(self.buf))
            del self.buf[:take]
            size -= take

    async def handshake(self) -> None:
        assert (await self.read(12)).startswith(b"RFB 003.")
        await self.ws.send(b"RFB 003.008\n")
        types = await self.read((await self.read(1))[0])
        if 1 in types:
            await self.ws.send(b"\x01")
        else:
            await self.ws.send(b"\x02")
            await self.ws.send(vnc_response(PASSWORD, await self.read(16)))
        assert await self.read(4) == b"\0\0\0\0", "authentication failed"
        await self.ws.send(b"\x01")
        header = await self.read(24)
        await self.read(struct.unpack(">I", header[20:24])[0])
        await self.ws.send(b"\0\0\0\0" + PIXEL_FORMAT)
        await self.ws.send(struct.pack(">BxHi", 2, 1, 0))  # Raw only

    async def frame(self) -> int:
        """One full frame, asked for when the last one has arrived (as noVNC does; x11vnc
        merges requests that are outstanding together, so they cannot be piped)."""
        t0 = time.perf_counter()
        await self.ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, WIDTH, HEIGHT))
        total = 0
        first = True
        while True:
            kind = (await self.read(1))[0]
            if first:
                self.ttfb.append((time.perf_counter() - t0) * 1000)
                first = False
            if kind == 0:
                break
            if kind == 3:  # ServerCutText: x11vnc passes the X clipboard on
                await self.skip(struct.unpack(">3xI", await self.read(7))[0])
                continue
            assert kind == 2, f"unexpected server message {kind}"
        count = struct.unpack(">xH", await self.read(3))[0]
        for _ in range(count):
            _, _, w, h, enc = struct.unpack(">HHHHi", await self.read(12))
            assert enc == 0
            await self.skip(w * h * 4)
            total += w * h * 4
        return total


async def viewer_main(args: argparse.Namespace) -> None:
    async with websockets.connect(args.url, max_size=None, compression=None) as ws:
        if args.broker:
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(json.dumps({"type": "start"}))
        viewer = Viewer(ws)
        await viewer.handshake()
        await viewer.frame()  # warm-up
        started, relayed = time.perf_counter(), 0
        for _ in range(args.frames):
            relayed += await viewer.frame()
        mibps = relayed / (1 << 20) / (time.perf_counter() - started)
        pointer = XPointer(args.display)
        latencies = []
        for i in range(args.events):
            target = (100 + (i * 37) % 900, 100 + (i * 53) % 500)
            if pointer.where() == target:
                continue
            t0 = time.perf_counter()
            await ws.send(struct.pack(">BBHH", 5, 0, *target))
            while pointer.where() != target:
                time.sleep(0.0002)  # noqa: ASYNC251 (a spin on the X server, nothing to await)
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.01)
    ttfb = sorted(viewer.ttfb)
    result = {"mibps": mibps, "latencies_ms": latencies}
    print(json.dumps({**result, "ttfb_ms": ttfb[len(ttfb) // 2]}))


# --- the run (this process: the broker) ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_display() -> tuple[subprocess.Popen[bytes], str]:
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{WIDTH}x{HEIGHT}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as pipe:
        return xvfb, f":{pipe.readline().strip()}"


def start_services(
    secret: Path, vnc_port: int, ws_port: int
) -> tuple[subprocess.Popen[bytes], str, subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Xvfb (painted), x11vnc with one password, websockify in front of it."""
    xvfb, display = start_display()
    env = dict(os.environ, DISPLAY=display, XDG_SESSION_TYPE="x11")
    env.pop("WAYLAND_DISPLAY", None)
    x11vnc = subprocess.Popen(
        ["x11vnc", "-display", display, "-localhost", "-rfbport", str(vnc_port),
         "-passwdfile", str(secret), "-shared", "-forever", "-norc", "-noncache", "-quiet",
         *X11VNC_EXTRA],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(vnc_port)
    websockify = subprocess.Popen(
        ["websockify", f"127.0.0.1:{ws_port}", f"127.0.0.1:{vnc_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(ws_port)
    subprocess.run(["xsetroot", "-solid", "#3366cc"], env=env, check=True)
    return xvfb, display, x11vnc, websockify


async def run_viewer(url: str, display: str, args: argparse.Namespace, broker: bool) -> Any:
    argv = [sys.executable, __file__, "--viewer", "--url", url, "--display", display,
            "--frames", str(args.frames), "--events", str(args.events)]  # fmt: skip
    if broker:
        argv.append("--broker")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"viewer failed ({'broker' if broker else 'direct'})"
    return json.loads(out.decode().strip().splitlines()[-1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc), to see which hop is busy."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    import httpx

    from bench.bench_agent_common import broker, device_id, enroll_agent, spawn_agent
    from broker.gateway import cli as gateway_cli

    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-desktop-"))
    secret = tmp / "vnc-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    vnc_port, ws_port = free_port(), free_port()
    xvfb, display, x11vnc, websockify = await asyncio.to_thread(
        start_services, secret, vnc_port, ws_port
    )
    agent = None
    try:
        async with broker(tmp) as b:
            settings = await enroll_agent(b)
            os.environ.update(
                DISPLAY=display,
                SUPPORTBROKER_AGENT_DESKTOP="attach",
                SUPPORTBROKER_AGENT_DESKTOP_PORT=str(vnc_port),
                SUPPORTBROKER_AGENT_DESKTOP_PASSWORD_FILE=str(secret),
            )
            agent = await spawn_agent(settings, stdout=asyncio.subprocess.PIPE)
            device = device_id(settings)
            while device not in b.gateway.links:  # noqa: ASYNC110 (a dict, not an event)
                await asyncio.sleep(0.05)
            headers = {"Authorization": f"Bearer {b.tech_token}"}
            async with httpx.AsyncClient(base_url=b.url, timeout=30) as api:
                body = {
                    "ticket": {"system": "standalone", "external_id": "HD-BENCH"},
                    "device_id": device,
                    "reason": "benchmark of the screen relay",
                    "capabilities": ["view", "control"],
                    "duration_minutes": 120,
                }
                created = (await api.post("/api/v1/sessions", json=body, headers=headers)).json()
            assert agent.stdout is not None
            assert agent.stdin is not None
            seen = b""
            while b"Allow? [y/N]" not in seen:
                seen += await agent.stdout.read(4096)
            agent.stdin.write(b"y\n")
            await agent.stdin.drain()

            async def broker_url() -> str:
                secret = await gateway_cli.ticket(b.url, b.tech_token, created["id"], "control")
                return gateway_cli.ws_url(b.url, f"/api/v1/gateway/desktop?ticket={secret}")

            direct_url = f"ws://127.0.0.1:{ws_port}/"
            # One unmeasured run first: x11vnc is slower to serve frames once the pointer
            # has moved (it draws the cursor into them), so every measured run starts there.
            await run_viewer(direct_url, display, args, broker=False)
            results: dict[str, list[Any]] = {"direct": [], "broker": []}
            for r in range(args.rounds):
                order = ["direct", "broker"] if r % 2 == 0 else ["broker", "direct"]
                for path in order:
                    url = direct_url if path == "direct" else await broker_url()
                    pids = {"x11vnc": x11vnc.pid, "websockify": websockify.pid,
                            "agent": agent.pid, "broker": os.getpid()}  # fmt: skip
                    before = {k: cpu_seconds(v) for k, v in pids.items()}
                    results[path].append(
                        await run_viewer(url, display, args, broker=path == "broker")
                    )
                    used = {k: cpu_seconds(v) - before[k] for k, v in pids.items()}
                    last = results[path][-1]
                    cpu = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
                    print(f"round {r + 1} {path}: {last['mibps']:.1f} MiB/s, first byte "
                          f"p50 {last['ttfb_ms']:.1f} ms; CPU s {cpu}")  # fmt: skip
            report(results, args)
    finally:
        if agent is not None and agent.returncode is None:
            agent.terminate()
            await agent.wait()
        for proc in (websockify, x11vnc, xvfb):
            proc.terminate()
            proc.wait(timeout=10)


def report(results: dict[str, list[Any]], args: argparse.Namespace) -> None:
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.rounds} rounds x {args.frames} full frames of {WIDTH}x{HEIGHT}x32 (Raw)")
    best = {p: max(r["mibps"] for r in rs) for p, rs in results.items()}
    for r, (d, b) in enumerate(zip(results["direct"], results["broker"], strict=True)):
        print(f"  round {r + 1}: direct {d['mibps']:.1f}, broker {b['mibps']:.1f} MiB/s, "
              f"ratio {b['mibps'] / d['mibps']:.2f}x")  # fmt: skip
    ratio = best["broker"] / best["direct"]
    print(
        f"throughput best, one request at a time: broker+agent {best['broker']:.1f} MiB/s, "
        f"websockify {best['direct']:.1f} MiB/s, ratio {ratio:.2f}x (target >= 0.7x)"
    )
    lat = {p: [x for r in rs for x in r["latencies_ms"]] for p, rs in results.items()}
    for path in ("direct", "broker"):
        xs = lat[path]
        print(f"input latency {path}: n={len(xs)} p50 {pct(xs, 0.5):.2f} ms, "
              f"p99 {pct(xs, 0.99):.2f} ms")  # fmt: skip
    added = pct(lat["broker"], 0.99) - pct(lat["direct"], 0.99)
    print(f"added p99 latency: {added:.2f} ms (target <= 20 ms); added p50 "
          f"{pct(lat['broker'], 0.5) - pct(lat['direct'], 0.5):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--viewer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--display", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    asyncio.run(viewer_main(parsed) if parsed.viewer else main(parsed))
