"""A RELP client (the Reliable Event Logging Protocol of rsyslog's ``imrelp``), just enough to
send syslog messages and know which ones the receiver took.

A frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``; the client opens a session with
``open`` (offering ``commands=syslog``), sends ``syslog`` frames and ends with ``close``; the
server answers each frame with ``rsp`` carrying the same transaction number and a status
(``200 OK``). A message counts as delivered only once its ``rsp 200`` arrived: a connection
lost before that means "send it again", which is why every message carries its log position.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from broker.errors import SiemDeliveryError

OFFER = b"relp_version=0\nrelp_software=supportbroker\ncommands=syslog"
MAX_TXNR = 999_999_999
WINDOW = 128  # frames in flight before we wait for their answers (librelp's default)
MAX_HEADER = 32  # "999999999 serverclose 999999999 " fits


class RelpClient:
    """One RELP session over TCP (or TLS when ``ssl_context`` is given)."""

    def __init__(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None, timeout: float
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._txnr = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl_context),
                self.timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SiemDeliveryError(f"RELP {self.host}:{self.port} unreachable: {exc}") from exc
        self._txnr = 0
        await self._exchange([(b"open", OFFER)])

    async def send(self, messages: Sequence[bytes]) -> None:
        """Send ``messages`` as syslog frames; returns once every one was acknowledged."""
        if self._writer is None:
            await self.open()
        for start in range(0, len(messages), WINDOW):
            await self._exchange([(b"syslog", m) for m in messages[start : start + WINDOW]])

    async def close(self) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            await self._exchange([(b"close", b"")])
        except SiemDeliveryError:
            pass  # closing a session the server already dropped: nothing is owed
        finally:
            self._drop()

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def _next_txnr(self) -> int:
        self._txnr = self._txnr % MAX_TXNR + 1
        return self._txnr

    async def _exchange(self, frames: list[tuple[bytes, bytes]]) -> None:
        if self._writer is None or self._reader is None:
            raise SiemDeliveryError("RELP: the session is not open")
        expected = []
        out = bytearray()
        for command, data in frames:
            txnr = self._next_txnr()
            expected.append(txnr)
            out += b"%d %s %d" % (txnr, command, len(data))
            if data:
                out += b" " + data
            out += b"\n"
        try:
            self._writer.write(bytes(out))
            await asyncio.wait_for(self._writer.drain(), self.timeout)
            for txnr in expected:
                await self._await_rsp(txnr)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            self._drop()
            raise SiemDeliveryError(f"RELP {self.host}:{self.port}: {exc or 'timeout'}") from exc
        except SiemDeliveryError:
            self._drop()
            raise

    async def _await_rsp(self, txnr: int) -> None:
        while True:
            got, command, data = await self._read_frame()
            if command == b"serverclose":
                raise SiemDeliveryError(f"RELP {self.host}:{self.port} closed the session")
            if command != b"rsp" or got != txnr:
                raise SiemDeliveryError(f"RELP: expected rsp {txnr}, got {command!r} {got}")
            status = data.split(b"\n", 1)[0]
            if not status.startswith(b"200"):
                raise SiemDeliveryError(f"RELP {self.host}:{self.port} refused: {status!r}")
            return

    async def _read_frame(self) -> tuple[int, bytes, bytes]:
        read = self._reader
        if read is None:
            raise SiemDeliveryError("RELP: the session is not open")
        txnr = await asyncio.wait_for(read.readuntil(b" "), self.timeout)
        command = await asyncio.wait_for(read.readuntil(b" "), self.timeout)
        # DATALEN is followed by SP and data, or directly by LF when it is 0.
        digits = bytearray()
        while True:
            c = await asyncio.wait_for(read.readexactly(1), self.timeout)
            if c in b" \n":
                break
            digits += c
            if len(digits) > 9:
                raise SiemDeliveryError("RELP: a frame length is too long")
        length = int(digits or b"0")
        data = b""
        if c == b" ":
            data = await asyncio.wait_for(read.readexactly(length + 1), self.timeout)
            data = data[:-1]  # the trailing LF
        try:
            return int(txnr.strip()), command.strip(), data
        except ValueError as exc:
            raise SiemDeliveryError(f"RELP: unreadable frame {txnr!r}") from exc
