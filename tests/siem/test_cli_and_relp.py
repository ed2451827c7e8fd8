"""``supportbroker siem status`` shows each target's cursor and lag from the database (SQLite
and PostgreSQL); the RELP client treats a refusal or a closed session as "not delivered"; a
batch cut short is sent again from the cursor (repeats, never gaps)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

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
def broker_env(broker_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """tests/conftest.py's environment, with two SIEM targets."""
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


class DroppingRelpServer:
    """Keeps every syslog frame it acknowledged; the first session dies after ``drop_after``
    acknowledgements, the way a receiver restarting mid-batch does."""

    def __init__(self, drop_after: int) -> None:
        self.drop_after = drop_after
        self.sessions = 0
        self.received: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        acked = 0
        while True:
            try:
                txnr = (await reader.readuntil(b" ")).strip()
                command = (await reader.readuntil(b" ")).strip()
                digits = b""
                while (c := await reader.readexactly(1)) not in b" \n":
                    digits += c
                data = (await reader.readexactly(int(digits) + 1))[:-1] if c == b" " else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if command == b"syslog":
                if self.sessions == 1 and acked == self.drop_after:
                    writer.close()
                    return
                self.received.append(data)
                acked += 1
            writer.write(txnr + b" rsp 6 200 OK\n")
            await writer.drain()


async def test_a_batch_cut_short_is_sent_again_from_the_cursor(app: Any) -> None:
    import re

    from broker.config import SiemTarget
    from broker.siem.service import status
    from broker.siem.transport import RelpSender

    fake = DroppingRelpServer(drop_after=7)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = SiemTarget(name="soc", kind="relp", port=port, timeout_seconds=5)
    sender = RelpSender(target, app.state.settings.audit_log_id)
    maker = app.state.sessionmaker
    await write_events(maker, 20)
    try:
        with pytest.raises(SiemDeliveryError):
            await export_batch(maker, target, sender, 20)
        assert await export_batch(maker, target, sender, 20) == 20
    finally:
        await sender.close()
        server.close()

    got = [int(re.search(rb'pos="(\d+)"', m).group(1)) for m in fake.received]  # type: ignore[union-attr]
    assert got == list(range(7)) + list(range(20))  # the cut batch again, from its start
    settings = app.state.settings.model_copy(update={"siem_targets": [target]})
    async with maker() as db:
        (found,) = await status(db, settings)
    assert (found.next_position, found.delivered, found.lag) == (20, 20, 0)
