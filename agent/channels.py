"""The three things a technician can reach, each checked against the local grant first.

``shell SESSION``: a PTY running the user's shell (or the configured command);
``forward SESSION PORT``: bytes relayed to 127.0.0.1:PORT if the group allows the port;
subsystem ``sftp`` with env ``SB_SESSION``: SFTP confined to the group's allowed directories,
each transferred file reported (name, size, SHA-256, direction) to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import os
import struct
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import asyncssh

if sys.platform != "win32":  # a PTY shell is POSIX; files and forwards work everywhere
    import fcntl
    import pty
    import termios

Report = Callable[[dict[str, Any]], None]
# Forwarded bytes are read in large slices: per-read overhead, not copying, limits throughput.
FORWARD_READ = 1 << 20
# How much free heap glibc keeps when it trims, and adds when it grows (``M_TOP_PAD``).
RELAY_HEAP_PAD = 16 << 20
_M_TOP_PAD = -2  # glibc's mallopt() parameter number


def keep_relay_heap(pad: int = RELAY_HEAP_PAD) -> bool:
    """Keep ``pad`` bytes of free heap instead of handing it back to the system at each trim.

    A forward's bytes pass through buffers of 128 KiB - 1 MiB (SSH packets, socket reads),
    allocated and freed many times a second. With glibc's defaults the heap top is trimmed
    whenever a few MiB are free, and the next buffers fault their pages in again: measured
    on a 384 MiB forward, the agent took ~100,000 page faults (one per 4 KiB forwarded) and
    a third more CPU than with the pad (under 1,000 faults). glibc on Linux only (elsewhere
    nothing changes, and False is returned); the cost is at most ``pad`` of retained heap."""
    if sys.platform != "linux":
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_TOP_PAD, pad))
    except (OSError, AttributeError):
        return False


# The broker uploads to a staging name with this suffix, created exclusively, and renames it
# once both hashes agree; one never renamed (the link dropped, the broker gave up) is removed
# when the SFTP session ends, so nothing half-written stays on the device.
STAGING_SUFFIX = ".sbpart"


def _take_terminal() -> None:
    """In the shell's process, after ``setsid``: make its PTY (stdin) the controlling
    terminal. An inherited PTY is not one by itself: the shell would say "can't access tty;
    job control turned off" and Ctrl-C would not reach what it runs."""
    if sys.platform != "win32":  # only ever called for a PTY shell, which is POSIX
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_winsize(fd: int, width: int, height: int) -> None:
    if sys.platform != "win32" and width > 0 and height > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _openpty() -> tuple[int, int]:
    if sys.platform == "win32":
        raise OSError("no PTY on Windows")
    else:  # noqa: RET506 (an else branch is what the type checker's platform check reads)
        return pty.openpty()


async def run_shell(process: asyncssh.SSHServerProcess[bytes], command: str | None) -> None:
    """Run the shell on a fresh PTY and pump bytes until either side ends."""
    if sys.platform == "win32":
        process.stderr.write(b"the agent has no terminal on Windows yet\n")
        process.exit(1)
    else:
        await _pty_shell(process, command)


async def _pty_shell(process: asyncssh.SSHServerProcess[bytes], command: str | None) -> None:
    master, slave = _openpty()
    width, height, _, _ = process.get_terminal_size()
    _set_winsize(slave, width or 80, height or 24)
    argv = [command] if command else [os.environ.get("SHELL", "/bin/sh")]
    env = dict(os.environ, TERM=process.get_terminal_type() or "xterm-256color")
    proc = await asyncio.create_subprocess_exec(
        *argv[0].split(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,  # a session of its own, whose controlling terminal ...
        preexec_fn=_take_terminal,  # ... is the PTY (one ioctl: safe before exec)
        env=env,
    )
    os.close(slave)
    loop = asyncio.get_running_loop()
    out_done = loop.create_future()

    def _readable() -> None:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(master)
            if not out_done.done():
                out_done.set_result(None)
            return
        process.stdout.write(data)

    loop.add_reader(master, _readable)

    async def _input() -> None:
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as change:
                _set_winsize(master, change.width, change.height)
                continue
            if not data:
                # EOF from the technician is a ^D typed at the terminal, not a hang-up: the
                # shell decides, and its remaining output is still delivered.
                os.write(master, b"\x04")
                return
            os.write(master, data)

    pump = asyncio.create_task(_input())
    closed = asyncio.ensure_future(process.wait_closed())  # the broker closed the channel
    exited = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait({out_done, exited, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, closed, exited):
            task.cancel()
        loop.remove_reader(master)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        os.close(master)
    process.exit(proc.returncode if proc.returncode and proc.returncode > 0 else 0)


async def run_forward(process: asyncssh.SSHServerProcess[bytes], port: int) -> None:
    """Relay the channel to a local TCP port."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        process.stderr.write(f"cannot reach local port {port}: {exc}\n".encode())
        process.exit(1)
        return

    await relay_local(process, reader, writer)
    process.exit(0)


async def relay_local(
    process: asyncssh.SSHServerProcess[bytes],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Relay the channel and a local connection (a forward's port, the desktop's server)."""
    # Deep buffers on both sides: with the default 64 KiB high-water marks each large read
    # waits for the other side to drain, and the hops take turns instead of overlapping.
    writer.transport.set_write_buffer_limits(high=FORWARD_READ * 4)
    process.channel.set_write_buffer_limits(high=FORWARD_READ * 4)

    async def _up() -> None:
        while data := await process.stdin.read(FORWARD_READ):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()  # a half-close: the reply still comes back

    async def _down() -> None:
        while data := await reader.read(FORWARD_READ):
            process.stdout.write(data)
            await process.stdout.drain()

    up = asyncio.create_task(_up())
    down = asyncio.create_task(_down())
    closed = asyncio.ensure_future(process.wait_closed())
    try:
        # Done when the local service hangs up or the broker closes the channel; the
        # technician's EOF alone only half-closes (``_up`` ends, replies keep flowing).
        await asyncio.wait({down, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down, closed):
            task.cancel()
        writer.close()


class ConfinedSFTPServer(asyncssh.SFTPServer):
    """SFTP limited to ``roots`` (symlinks resolved first), reporting every transfer."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        roots: tuple[str, ...],
        session_id: str,
        report: Report,
        refusal: str | None = None,
    ) -> None:
        super().__init__(chan)
        self._refusal = refusal
        self._roots = tuple(os.path.realpath(r) for r in roots)
        self._session_id = session_id
        self._report = report
        self._touched: dict[int, tuple[str, str]] = {}
        self._staged: set[str] = set()  # staging files created and not yet renamed or removed

    def map_path(self, path: bytes) -> bytes:
        text = os.fsdecode(path)
        if self._refusal is not None:
            raise asyncssh.SFTPPermissionDenied(f"refused by the agent: {self._refusal}")
        if not self._roots:
            raise asyncssh.SFTPPermissionDenied("no directories are allowed for this group")
        if text in {"", "."}:
            text = self._roots[0]
        elif not text.startswith("/"):
            text = os.path.join(self._roots[0], text)
        real = os.path.realpath(text)
        for root in self._roots:
            if real == root or real.startswith(root.rstrip("/") + "/"):
                return os.fsencode(real)
        raise asyncssh.SFTPPermissionDenied(f"{text} is outside the allowed directories")

    def reverse_map_path(self, path: bytes) -> bytes:
        return path

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        """The folder's entries without ``.`` and ``..``: the parent of an allowed folder is
        outside it, and listing it would refuse the whole folder."""
        with os.scandir(os.fsdecode(self.map_path(path))) as entries:
            for entry in entries:
                attrs = asyncssh.SFTPAttrs.from_local(entry.stat(follow_symlinks=False))
                yield asyncssh.SFTPName(os.fsencode(entry.name), attrs=attrs)

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        file_obj = super().open(path, pflags, attrs)
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT))
        self._touched[id(file_obj)] = (os.fsdecode(path), "upload" if writing else "download")
        fresh = pflags & asyncssh.FXF_CREAT and pflags & asyncssh.FXF_EXCL
        if fresh and path.endswith(STAGING_SUFFIX.encode()):
            self._staged.add(os.fsdecode(self.map_path(path)))
        return file_obj

    def _unstage(self, path: bytes) -> None:
        self._staged.discard(os.fsdecode(self.map_path(path)))

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        super().rename(oldpath, newpath)
        self._unstage(oldpath)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        super().posix_rename(oldpath, newpath)
        self._unstage(oldpath)

    def remove(self, path: bytes) -> None:
        self._unstage(path)
        super().remove(path)

    def exit(self) -> None:
        for staged in self._staged:
            with contextlib.suppress(OSError):
                os.remove(staged)
        self._staged.clear()
        super().exit()

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        """Every byte, or an error: an unbuffered write to a nearly full disk writes part of
        the data and returns the count, which the SFTP server would otherwise ignore (the
        broker then saw only a hash mismatch). Writing the rest makes the disk say ENOSPC,
        which reaches the technician as "No space left on device"."""
        raw = cast(io.RawIOBase, file_obj)
        raw.seek(offset)
        view, done = memoryview(data), 0
        while done < len(data):
            written = raw.write(view[done:])
            if not written:  # nothing written and no error: not a disk that will progress
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += written
        return done

    def close(self, file_obj: object) -> None:
        super().close(file_obj)
        touched = self._touched.pop(id(file_obj), None)
        if touched is None:
            return
        name, direction = touched
        # Hash what is on disk after close: offsets may arrive out of order, the file is truth.
        sha, size = hashlib.sha256(), 0
        with open(name, "rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
        self._report(
            {
                "type": "file_transfer",
                "session_id": self._session_id,
                "name": Path(name).name,
                "path": name,
                "size": size,
                "sha256": sha.hexdigest(),
                "direction": direction,
            }
        )
