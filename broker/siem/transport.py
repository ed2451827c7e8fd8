"""How batches reach a receiver: the ``Sender`` port and one adapter per target kind.

``send`` returns only when the receiver took the whole batch (HTTPS: a 2xx answer; RELP: a
``200`` for every frame; syslog over TLS: the bytes flushed to the connection, the weakest of
the three, see docs/SIEM.md), else raises :class:`SiemDeliveryError`. The exporter advances the
cursor only after ``send`` returned, so every failure means "send it again".
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from typing import Protocol

import httpx

from broker.config import SiemTarget
from broker.errors import SiemDeliveryError
from broker.siem.format import SiemEvent, json_line, syslog_message
from broker.siem.relp import RelpClient


class Sender(Protocol):
    async def send(self, events: Sequence[SiemEvent]) -> None: ...

    async def close(self) -> None: ...


class NullSender:
    """Takes everything and keeps it (tests, and a target being set up)."""

    def __init__(self) -> None:
        self.sent: list[SiemEvent] = []

    async def send(self, events: Sequence[SiemEvent]) -> None:
        self.sent.extend(events)

    async def close(self) -> None:
        return None


def tls_context(target: SiemTarget) -> ssl.SSLContext:
    """Verify the receiver against ``ca_file`` (or the system's CAs); present a client
    certificate when one is configured."""
    ctx = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
    if target.cert_file is not None:
        ctx.load_cert_chain(target.cert_file, target.key_file)
    return ctx


class HttpsSender:
    """JSON lines POSTed to the target's URL, one request per batch."""

    def __init__(self, target: SiemTarget, log_id: str) -> None:
        self.target = target
        self.log_id = log_id
        headers = {"content-type": "application/x-ndjson"}
        if target.token is not None:
            headers["authorization"] = f"Bearer {target.token.get_secret_value()}"
        self._client = httpx.AsyncClient(
            verify=tls_context(target), timeout=target.timeout_seconds, headers=headers
        )

    async def send(self, events: Sequence[SiemEvent]) -> None:
        body = b"".join(json_line(e, self.log_id) for e in events)
        try:
            response = await self._client.post(self.target.url, content=body)
        except httpx.HTTPError as exc:
            raise SiemDeliveryError(f"{self.target.url}: {exc or type(exc).__name__}") from exc
        if not response.is_success:
            raise SiemDeliveryError(f"{self.target.url} answered {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()


class _SyslogSender:
    def __init__(self, target: SiemTarget, log_id: str) -> None:
        self.target = target
        self.log_id = log_id
        self.hostname = target.hostname or socket.gethostname()

    def messages(self, events: Sequence[SiemEvent]) -> list[bytes]:
        return [
            syslog_message(e, self.log_id, hostname=self.hostname, facility=self.target.facility)
            for e in events
        ]


class RelpSender(_SyslogSender):
    """RFC 5424 messages over RELP, each acknowledged by the receiver."""

    def __init__(self, target: SiemTarget, log_id: str) -> None:
        super().__init__(target, log_id)
        self._client = RelpClient(
            target.host,
            target.port,
            ssl_context=tls_context(target) if target.tls else None,
            timeout=target.timeout_seconds,
        )

    async def send(self, events: Sequence[SiemEvent]) -> None:
        await self._client.send(self.messages(events))

    async def close(self) -> None:
        await self._client.close()


class SyslogTlsSender(_SyslogSender):
    """RFC 5424 messages over TLS with RFC 5425's octet counting (``LEN SP MSG``)."""

    def __init__(self, target: SiemTarget, log_id: str) -> None:
        super().__init__(target, log_id)
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, events: Sequence[SiemEvent]) -> None:
        where = f"{self.target.host}:{self.target.port}"
        frames = b"".join(b"%d %s" % (len(m), m) for m in self.messages(events))
        try:
            writer = self._writer or await self._connect()
            writer.write(frames)
            await asyncio.wait_for(writer.drain(), self.target.timeout_seconds)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self.close()
            raise SiemDeliveryError(f"syslog-tls {where}: {exc or 'timeout'}") from exc

    async def _connect(self) -> asyncio.StreamWriter:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.target.host, self.target.port, ssl=tls_context(self.target)
            ),
            self.target.timeout_seconds,
        )
        self._writer = writer
        return writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def sender_for(target: SiemTarget, log_id: str) -> Sender:
    if target.kind == "https":
        return HttpsSender(target, log_id)
    if target.kind == "relp":
        return RelpSender(target, log_id)
    return SyslogTlsSender(target, log_id)
