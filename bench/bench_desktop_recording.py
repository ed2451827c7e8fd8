"""Desktop recording: size per minute (idle and busy 1280x800 screen) and the CPU of sealing.

1. Capture: Xvfb 1280x800 and x11vnc (``-nopw -localhost``); a viewer that asks what noVNC
   asks (its pixel format; Tight, ZRLE, Hextile, CopyRect, Raw; JPEG quality 6, compression
   2) and sends an incremental FramebufferUpdateRequest every 40 ms, reading the server's
   bytes as they come (up to 1 MiB a read, like the relay). ``idle``: nothing moves.
   ``busy``: 25 times a second, 30 filled rectangles of random colours and sizes up to
   300x200 are drawn on the root window (libX11 through ctypes).
2. Seal: each captured stream is fed, on its own clock, to the broker's recorder
   (``DesktopRecorder``: frames, zlib, base64, one encrypted hash-chained record per chunk on
   SQLite in WAL mode with ``synchronous=FULL``, as the broker does), and to the baseline:
   SHA-256 and AES-256-GCM of the same bytes in the same chunks, nothing else (the floor
   of sealing anything); rounds interleaved. CPU is the process
   time (the aiosqlite thread included); the share of one core is CPU ÷ the stream's
   duration. Size per minute: the raw RFB bytes and the sealed chunk payloads.

    .venv/bin/python bench/bench_desktop_recording.py [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit import schema  # noqa: E402
from bench.bench_audit_append import make_log, sqlite_engine  # noqa: E402
from broker.gateway.desktop_recording import MAX_CHUNK_BYTES, DesktopRecorder  # noqa: E402

WIDTH, HEIGHT = 1280, 800
# noVNC's pixel format (32 bpp, depth 24, little-endian, red/green/blue shifts 0/8/16).
NOVNC_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)
NOVNC_ENCODINGS = [7, 16, 5, 1, 0, -26, -254, -223]
Stream = list[tuple[float, bytes]]  # (seconds since ServerInit, bytes read)


def start_display() -> tuple[subprocess.Popen[bytes], str]:
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten",
         "tcp", "-noreset"],
        pass_fds=(write,), stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    number = b""
    while not number.endswith(b"\n"):
        number += os.read(read, 16)
    os.close(read)
    return xvfb, f":{number.decode().strip()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Painter(threading.Thread):
    """The busy screen: random filled rectangles on the root window, 25 times a second."""

    def __init__(self, display: str) -> None:
        super().__init__(daemon=True)
        lib = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
        lib.XOpenDisplay.restype = ctypes.c_void_p
        lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        lib.XDefaultRootWindow.restype = ctypes.c_ulong
        lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        lib.XCreateGC.restype = ctypes.c_void_p
        lib.XCreateGC.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p]
        lib.XSetForeground.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong]
        lib.XFillRectangle.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p]
        lib.XFillRectangle.argtypes += [ctypes.c_int] * 2 + [ctypes.c_uint] * 2
        lib.XFlush.argtypes = [ctypes.c_void_p]
        self.lib, self.dpy = lib, lib.XOpenDisplay(display.encode())
        assert self.dpy, f"cannot open {display}"
        self.root = lib.XDefaultRootWindow(self.dpy)
        self.gc = lib.XCreateGC(self.dpy, self.root, 0, None)
        self.stop = threading.Event()
        self.rng = random.Random(17)

    def run(self) -> None:
        rng, lib = self.rng, self.lib
        while not self.stop.wait(0.04):
            for _ in range(30):
                lib.XSetForeground(self.dpy, self.gc, rng.randrange(1 << 24))
                w, h = rng.randrange(10, 300), rng.randrange(10, 200)
                x, y = rng.randrange(WIDTH - w), rng.randrange(HEIGHT - h)
                lib.XFillRectangle(self.dpy, self.root, self.gc, x, y, w, h)
            lib.XFlush(self.dpy)


def capture(port: int, seconds: float) -> tuple[bytes, Stream]:
    """What x11vnc sends a noVNC-like viewer for ``seconds``: ServerInit and the timed reads."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            part = sock.recv(n - len(buf))
            assert part, "x11vnc closed the connection"
            buf += part
        return buf

    assert exactly(12).startswith(b"RFB 003.")
    sock.sendall(b"RFB 003.008\n")
    types = exactly(exactly(1)[0])
    assert 1 in types, f"x11vnc offers no security None: {list(types)}"
    sock.sendall(b"\x01")
    assert exactly(4) == b"\0\0\0\0"
    sock.sendall(b"\x01")  # shared
    head = exactly(24)
    server_init = head + exactly(struct.unpack(">I", head[20:24])[0])
    sock.sendall(b"\x00\x00\x00\x00" + NOVNC_FORMAT)
    encodings = struct.pack(
        f">BxH{len(NOVNC_ENCODINGS)}i", 2, len(NOVNC_ENCODINGS), *NOVNC_ENCODINGS
    )
    sock.sendall(encodings)
    sock.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, WIDTH, HEIGHT))
    sock.setblocking(False)
    stream: Stream = []
    start = time.monotonic()
    next_request = start + 0.04
    while (now := time.monotonic()) - start < seconds:
        if now >= next_request:
            sock.sendall(struct.pack(">BBHHHH", 3, 1, 0, 0, WIDTH, HEIGHT))
            next_request = now + 0.04
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        assert data, "x11vnc closed the connection"
        stream.append((now - start, data))
    sock.close()
    return server_init, stream


def record_screen(seconds: float) -> dict[str, tuple[bytes, Stream]]:
    xvfb, display = start_display()
    port = free_port()
    env = {**os.environ, "DISPLAY": display}
    vnc = subprocess.Popen(
        ["x11vnc", "-display", display, "-localhost", "-rfbport", str(port), "-nopw", "-shared",
         "-forever", "-quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(["xsetroot", "-solid", "#3366cc"], env=env, check=True)
        out = {"idle": capture(port, seconds)}
        painter = Painter(display)
        painter.start()
        try:
            out["busy"] = capture(port, seconds)
        finally:
            painter.stop.set()
            painter.join()
        return out
    finally:
        vnc.kill()  # x11vnc can hang in its SIGTERM handler
        vnc.wait()
        xvfb.terminate()
        xvfb.wait()


class CryptoFloor:
    """The baseline: what sealing the same bytes must at least cost — SHA-256 and AES-256-GCM
    of each 512 KiB chunk, nothing else (no frames, compression, JSON, chain or database)."""

    def __init__(self) -> None:
        self.aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self.buf = bytearray()

    def _seal(self) -> None:
        hashlib.sha256(self.buf).digest()
        self.aead.encrypt(os.urandom(12), bytes(self.buf), None)
        self.buf.clear()

    async def server_init(self, data: bytes) -> None:
        self.buf += data

    async def server_data(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= MAX_CHUNK_BYTES:
            self._seal()

    async def closed(self, reason: str) -> None:
        self._seal()


async def feed(workdir: Path, server_init: bytes, stream: Stream, null: bool) -> tuple[float, int]:
    """CPU seconds to take ``stream`` through the recorder (or the null tap); bytes sealed."""
    engine = sqlite_engine(workdir / "audit.db")
    async with engine.begin() as conn:
        await conn.run_sync(schema.metadata.create_all)
    log = make_log(workdir)
    sealed = 0
    real_append = log.append

    async def counting_append(conn: Any, events: Any) -> Any:
        nonlocal sealed
        sealed += sum(len(json.dumps(e.payload)) for e in events)
        return await real_append(conn, events)

    log.append = counting_append  # type: ignore[method-assign]
    now = [0.0]
    record = SimpleNamespace(
        ticket=SimpleNamespace(ref="standalone:HD-1"),
        session=SimpleNamespace(id="bench-session"),
        device=SimpleNamespace(id="bench-device"),
        technician=SimpleNamespace(display_name="Bench"),
    )

    async def failed(why: str, recording_id: str) -> None:
        raise RuntimeError(why)

    tap: Any = (
        CryptoFloor()
        if null
        else DesktopRecorder(
            log, engine.begin, record, chunk_seconds=1.0, record_input=False,  # type: ignore[arg-type]
            on_failure=failed, clock=lambda: now[0],
        )
    )  # fmt: skip
    cpu = time.process_time()
    await tap.server_init(server_init)
    for t, data in stream:
        now[0] = t
        await tap.server_data(data)
    await tap.closed("the viewer left")
    cpu = time.process_time() - cpu
    await engine.dispose()
    return cpu, sealed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    screens = record_screen(args.seconds)
    for name, (init, stream) in screens.items():
        raw = sum(len(d) for _, d in stream)
        duration = stream[-1][0] if stream else args.seconds
        duration = max(duration, args.seconds)
        rec_cpu, null_cpu, sealed = [], [], 0
        for r in range(args.rounds):
            for null in (True, False) if r % 2 == 0 else (False, True):
                with tempfile.TemporaryDirectory() as tmp:
                    cpu, size = asyncio.run(feed(Path(tmp), init, stream, null))
                (null_cpu if null else rec_cpu).append(cpu)
                sealed = size or sealed
        per_min = 60 / duration
        best, base = min(rec_cpu), min(null_cpu)
        print(f"{name}: {duration:.1f} s captured, {len(stream)} reads")
        print(f"  RFB stream        {raw * per_min / 2**10:10.1f} KiB/min")
        print(f"  sealed payloads   {sealed * per_min / 2**10:10.1f} KiB/min (zlib + base64, JSON)")
        print(
            f"  sealing CPU       {best:.3f} s for {duration:.1f} s = {100 * best / duration:.1f} %"
            f" of one core (rounds: {', '.join(f'{c:.3f}' for c in rec_cpu)})"
        )
        print(
            f"  baseline CPU      {base:.3f} s (SHA-256 + AES-GCM of the same bytes only);"
            f" recorder/baseline = {best / max(base, 1e-6):.1f}x"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
