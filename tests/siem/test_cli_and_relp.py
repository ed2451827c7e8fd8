"""``supportbroker siem status`` shows each target's cursor and lag from the database (SQLite
and PostgreSQL); the RELP client treats a refusal or a closed session as "not delivered"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.cli import main
from broker.config import Settings
from broker.errors import SiemDeliveryError
from broker.siem.format import SiemEvent, syslog_message
from broker.siem.relp import RelpClient
from broker.siem.service import export_batch
from broker.siem.transport import NullSender
from tests.siem.helpers import write_events


@pytest.fixture
def broker_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SUPPORTBROKER_DATABASE_URL", db_url)
    monkeypatch.setenv("SUPPORTBROKER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "test")
    monkeypatch.setenv("SUPPORTBROKER_SECRET_KEY", "cli-test-secret-" + "v" * 16)
    monkeypatch.setenv(
        "SUPPORTBROKER_SIEM_TARGETS",
        json.dumps(
            [
                {"name": "soc", "kind": "relp", "port": 9},
                {"name": "lake", "kind": "https", "url": "https://127.0.0.1:9/in"},
            ]
        ),
    )
    monkeypatch.setenv("SUPPORTBROKER_SIEM_BATCH_SIZE", "15")
    return Settings()


def test_status_shows_cursor_and_lag(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = broker_env

    async def scenario() -> None:
        from broker.db.engine import create_engine, create_sessionmaker
        from broker.evidence.setup import build_audit_log

        engine = create_engine(settings.database_url)
        maker = create_sessionmaker(
            engine, info={"audit_log": build_audit_log(settings), "settings": settings}
        )
        try:
            await write_events(maker, 40)
            sent = await export_batch(maker, settings.siem_targets[0], NullSender(), 15)
            assert sent == 15
        finally:
            await engine.dispose()

    asyncio.run(scenario())

    assert main(["siem", "status", "--json"]) == 0
    found = {t["target"]: t for t in json.loads(capsys.readouterr().out)}
    assert found["soc"]["next_position"] == 15
    assert found["soc"]["lag"] == 25
    assert found["soc"]["log_size"] == 40
    assert found["lake"]["next_position"] == 0
    assert found["lake"]["lag"] == 40

    assert main(["siem", "status"]) == 0
    out = capsys.readouterr().out
    assert "soc (relp): next position 15 of 40, lag 25" in out


class FakeRelpServer:
    """Accepts ``open``, then answers each ``syslog`` frame with ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                txnr = (await reader.readuntil(b" ")).strip()
                command = (await reader.readuntil(b" ")).strip()
                digits = b""
                while (c := await reader.readexactly(1)) not in b" \n":
                    digits += c
                if c == b" ":
                    await reader.readexactly(int(digits) + 1)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if command == b"open":
                writer.write(txnr + b" rsp 6 200 OK\n")
            elif self.answer == b"serverclose":
                writer.write(b"0 serverclose 0\n")
            else:
                writer.write(txnr + b" rsp %d %s\n" % (len(self.answer), self.answer))
            await writer.drain()


@pytest.fixture
async def refusing() -> AsyncIterator[FakeRelpServer]:
    fake = FakeRelpServer(b"500 queue full")
    fake.server = await asyncio.start_server(fake._handle, "127.0.0.1", 0)
    fake.port = fake.server.sockets[0].getsockname()[1]
    yield fake
    fake.server.close()


def _message() -> bytes:
    event = SiemEvent(7, "rid", "_system", 1, "auth.login", datetime.now(UTC), 3, b"\0" * 32)
    return syslog_message(event, "log", hostname="h", facility=13)


async def test_a_relp_refusal_is_no_delivery(refusing: FakeRelpServer) -> None:
    client = RelpClient("127.0.0.1", refusing.port, ssl_context=None, timeout=5)
    with pytest.raises(SiemDeliveryError, match="refused"):
        await client.send([_message()])
    assert not client.connected  # the next batch starts a new session
    refusing.answer = b"serverclose"
    with pytest.raises(SiemDeliveryError, match="closed the session"):
        await client.send([_message()])
    refusing.answer = b"200 OK"
    await client.send([_message(), _message()])
    await client.close()
