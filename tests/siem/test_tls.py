"""SIEM export over TLS (SQLite and PostgreSQL): RELP over TLS to a real rsyslog that checks
our client certificate, and RFC 5425 syslog over TLS (octet-counted frames) to a local TLS
receiver; both trust only the CA configured for the target."""

from __future__ import annotations

import re
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from broker.siem.service import TargetStatus, status
from tests.siem.helpers import (
    Rsyslog,
    TlsServer,
    free_port,
    make_certificates,
    until,
    write_events,
)

SD = re.compile(r'\[sbAudit@32473 log="[^"]*" pos="(\d+)"')


class OctetCountingReceiver:
    """A TLS server reading RFC 5425 frames (``LEN SP MSG``) into ``messages``."""

    def __init__(self, pem: dict[str, Path]) -> None:
        self.messages: list[bytes] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    digits = b""
                    while (c := self.rfile.read(1)) not in (b" ", b""):
                        digits += c
                    if not digits:
                        return
                    outer.messages.append(self.rfile.read(int(digits)))

        self.server = TlsServer(Handler, pem)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    return make_certificates(tmp_path)


@pytest.fixture
def rsyslog(tmp_path: Path, pem: dict[str, Path]) -> Iterator[Rsyslog]:
    workdir = tmp_path / "rsyslog"
    workdir.mkdir()
    receiver = Rsyslog(workdir, free_port(), tls=pem)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def plain(pem: dict[str, Path]) -> Iterator[OctetCountingReceiver]:
    receiver = OctetCountingReceiver(pem)
    yield receiver
    receiver.close()


@pytest.fixture
def settings_overrides(
    rsyslog: Rsyslog, plain: OctetCountingReceiver, pem: dict[str, Path]
) -> dict[str, Any]:
    return {
        "siem_targets": [
            {
                "name": "relp-tls",
                "kind": "relp",
                "port": rsyslog.port,
                "tls": True,
                "ca_file": str(pem["ca"]),
                "cert_file": str(pem["client_cert"]),
                "key_file": str(pem["client_key"]),
            },
            {
                "name": "syslog-tls",
                "kind": "syslog-tls",
                "port": plain.port,
                "ca_file": str(pem["ca"]),
                "hostname": "broker-1",
            },
        ],
        "siem_batch_size": 25,
        "siem_poll_seconds": 0.05,
        "siem_retry_seconds": 0.05,
        "siem_retry_max_seconds": 0.2,
    }


async def _statuses(app: FastAPI) -> dict[str, TargetStatus]:
    async with app.state.sessionmaker() as db:
        return {t.name: t for t in await status(db, app.state.settings)}


async def test_relp_over_tls_and_rfc5425_deliver_in_order(
    rsyslog: Rsyslog, plain: OctetCountingReceiver, app: FastAPI
) -> None:
    await write_events(app.state.sessionmaker, 60, per_transaction=20)

    async def delivered() -> bool:
        found = await _statuses(app)
        return found["relp-tls"].lag == 0 and found["syslog-tls"].lag == 0

    await until(delivered, "both TLS targets to catch up")
    rsyslog.stop()
    relp = [int(SD.match(line).group(1)) for line in rsyslog.out.read_text().splitlines()]  # type: ignore[union-attr]
    assert relp == list(range(60))

    async def all_read() -> bool:  # flushed to the socket is not yet read by the receiver
        return len(plain.messages) >= 60

    await until(all_read, "the TLS receiver to read every frame")
    assert len(plain.messages) == 60
    first = plain.messages[0].decode()
    # PRI 109 = facility 13 (log audit) * 8 + severity 5 (notice); MSGID is the event type.
    assert first.startswith("<109>1 ")
    assert " broker-1 supportbroker - ticket.updated [sbAudit@32473 " in first
    got = [int(SD.search(m.decode()).group(1)) for m in plain.messages]  # type: ignore[union-attr]
    assert got == list(range(60))
