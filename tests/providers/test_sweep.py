"""Providers are asked with no transaction open; outside connections are noticed by a sweep.

- Reconciliation and device sync ask the provider while the database holds nothing: a probe
  inside the provider's answer finds no other transaction open (PostgreSQL: no other
  connection idle in a transaction; SQLite: the write lock is free).
- The device-wide sweep flags a connection no approved session accounts for on a managed
  device where no session of ours runs: the fake provider, AnyDesk's API (fake, its
  documented shapes) and the real MeshCentral from npm (a local relay to the device).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from broker import tasks
from broker.devices.models import Device
from broker.providers import registry, service
from broker.providers.anydesk.provider import AnyDeskProvider
from broker.providers.anydesk.settings import AnyDeskSettings
from broker.providers.base import DeviceRef, ProviderEvent, RemoteDevice, Window
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.provider import MeshCentralProvider
from broker.providers.models import ProviderDeviceSweep, ProviderEventMark
from tests.factories import audit_events, make_device, make_group, make_user
from tests.providers import meshcentral_server as mc
from tests.providers.conftest import mc_settings
from tests.providers.fake_anydesk import FakeAnyDesk
from tests.providers.fakes import FakeProvider, connection
from tests.providers.test_service import REF, approved_session

EVERY = timedelta(minutes=5)


async def a_transaction_is_open(db_url: str) -> bool:
    """Whether some other connection holds a transaction on the test's database now."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        probe = sqlite3.connect(str(url.database), timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True  # "database is locked": a writer holds it
        finally:
            probe.close()
    conn = await asyncpg.connect(
        host=url.host, user=url.username, database=url.database, port=url.port or 5432
    )
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return bool(held)


@dataclass
class ProbingProvider(FakeProvider):
    """Looks at the database from inside each answer, as a slow provider would wait."""

    db_url: str = ""
    seen: list[tuple[str, bool]] = field(default_factory=list)

    async def _probe(self, call: str) -> None:
        self.seen.append((call, await a_transaction_is_open(self.db_url)))

    async def collect(self, device: DeviceRef, window: Window) -> list[ProviderEvent]:
        await self._probe("collect")
        return await super().collect(device, window)

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        await self._probe("annotate")
        await super().annotate(event, text)

    async def terminate(self, event: ProviderEvent) -> bool:
        await self._probe("terminate")
        return await super().terminate(event)

    async def list_devices(self) -> list[RemoteDevice]:
        await self._probe("list_devices")
        return await super().list_devices()


@pytest.fixture
async def probing(db_url: str) -> AsyncIterator[ProbingProvider]:
    provider = ProbingProvider(db_url=db_url)
    registry.install("fake", provider)
    yield provider
    await registry.reset()


async def test_reconcile_and_sync_ask_the_provider_with_nothing_open(
    app: Any, probing: ProbingProvider
) -> None:
    session = await approved_session(app)
    assert session.approved_at is not None
    base = session.approved_at
    probing.events = [
        connection("ours", "node-1", timedelta(seconds=5), base, session_id=session.id),
        connection("stranger", "node-1", timedelta(seconds=9), base, session_id=None, active=True),
    ]
    probing.devices = [RemoteDevice("node-9", "Kiosk", "Lobby")]
    async with app.state.sessionmaker() as db:  # the probe does see a transaction held open
        await db.execute(update(Device).values(name=Device.name))
        assert await a_transaction_is_open(probing.db_url)
        await db.rollback()
    async with app.state.sessionmaker() as db:
        assert await service.reconcile(db, session) == 2
        await db.commit()
        assert await service.sync_devices(db, "fake") == 1
        await db.commit()
    calls = [call for call, _ in probing.seen]
    assert calls == ["collect", "annotate", "terminate", "list_devices"]
    assert [held for _, held in probing.seen] == [False] * 4
    assert sorted(t for t, _ in await audit_events(app, REF)) == ["provider.connection"]


async def test_the_sweep_flags_an_outside_connection_where_no_session_runs(
    app: Any, probing: ProbingProvider
) -> None:
    tech, _ = await make_user(app, "technician")
    group = await make_group(app, [tech], name=f"g-{secrets.token_hex(2)}")
    quiet = await make_device(app, group, provider="fake", provider_device_id="node-7")
    now = datetime.now(UTC)
    probing.events = [
        connection("outside", "node-7", -timedelta(minutes=10), now, session_id=None, active=True)
    ]
    assert await service.sweep_devices(app.state.sessionmaker, every=EVERY, now=now) == 1
    assert [held for _, held in probing.seen] == [False, False]  # collect, terminate
    assert probing.terminated == ["outside"]
    (alert,) = [p["data"] for t, p in await audit_events(app, "_system") if t == "provider.alert"]
    assert (alert["alert"], alert["device_id"], alert["closed"]) == (
        "no_approved_request",
        quiet.id,
        True,
    )
    # Sealed once: not due again before a period, and a later sweep skips the marked event.
    assert await service.sweep_devices(app.state.sessionmaker, every=EVERY, now=now) == 0
    later = now + EVERY + timedelta(seconds=1)
    assert await service.sweep_devices(app.state.sessionmaker, every=EVERY, now=later) == 0
    async with app.state.sessionmaker() as db:
        marks = (await db.scalars(select(ProviderEventMark))).all()
        assert [(m.event_key, m.verdict) for m in marks] == [("outside", "unapproved")]


async def test_the_sweep_leaves_sessions_connections_and_survives_an_outage(
    app: Any, probing: ProbingProvider
) -> None:
    session = await approved_session(app)
    assert session.approved_at is not None
    probing.events = [
        connection(
            "ours", "node-1", timedelta(seconds=5), session.approved_at, session_id=session.id
        )
    ]
    now = datetime.now(UTC)
    assert await service.sweep_devices(app.state.sessionmaker, every=EVERY, now=now) == 0
    async with app.state.sessionmaker() as db:
        assert (await db.scalars(select(ProviderEventMark))).all() == []  # reconcile's to seal
        assert await service.reconcile(db, session) == 1
        await db.commit()

    probing.down = True
    later = now + EVERY + timedelta(seconds=1)
    assert await service.sweep_devices(app.state.sessionmaker, every=EVERY, now=later) == 0
    async with app.state.sessionmaker() as db:
        (row,) = (await db.scalars(select(ProviderDeviceSweep))).all()
        assert row.swept_at == now  # read up to the last good sweep only
        assert row.attempted_at == later
        assert row.last_error == "fake provider is down"
    probing.seen.clear()  # not asked again before a period has passed
    assert await service.sweep_devices(app.state.sessionmaker, every=EVERY, now=later) == 0
    assert probing.seen == []


async def test_the_background_loop_runs_the_sweep(app: Any, probing: ProbingProvider) -> None:
    tech, _ = await make_user(app, "technician")
    group = await make_group(app, [tech], name=f"g-{secrets.token_hex(2)}")
    await make_device(app, group, provider="fake", provider_device_id="node-8")
    probing.events = [
        connection("loop", "node-8", -timedelta(minutes=1), datetime.now(UTC), session_id=None)
    ]
    done = await tasks.run_jobs_once(app)
    assert done["providers.swept"] == 1


async def test_anydesk_sessions_nobody_asked_for_are_noticed_and_closed(app: Any) -> None:
    fake = FakeAnyDesk()
    settings = AnyDeskSettings(
        api_url="https://v1.api.anydesk.test:8081",
        license_id=fake.license_id,
        api_password=SecretStr(fake.password),
    )
    provider = AnyDeskProvider(settings, transport=httpx.ASGITransport(app=fake.app()))
    registry.install("anydesk", provider)
    try:
        tech, _ = await make_user(app, "technician")
        group = await make_group(app, [tech], name=f"ad-{secrets.token_hex(2)}")
        await make_device(app, group, provider="anydesk", provider_device_id="555666777")
        start = int((datetime.now(UTC) - timedelta(minutes=3)).timestamp())
        fake.add_session("77001", "555666777", start, active=True)
        assert await service.sweep_devices(app.state.sessionmaker, every=EVERY) == 1
        assert fake.sessions["77001"]["active"] is False  # closed through the API
        alerts = [p["data"] for t, p in await audit_events(app, "_system") if t == "provider.alert"]
        assert [(a["remote_id"], a["alert"], a["closed"]) for a in alerts] == [
            ("77001", "no_approved_request", True)
        ]
    finally:
        await registry.reset()


async def test_meshcentral_outside_relay_to_a_quiet_device_is_noticed(
    app: Any, meshcentral: mc.MeshServer
) -> None:
    live = MeshCentralProvider(mc_settings(meshcentral))
    registry.install("meshcentral", live)
    try:
        meshid = await admin.create_group(live.control, f"Sweep-{secrets.token_hex(3)}")
        nodeid = await admin.add_local_device(live.control, meshid, "pc-quiet", "127.0.0.1")
        async with app.state.sessionmaker() as db:
            await service.sync_devices(db, "meshcentral")
            await db.commit()
            device = (
                await db.scalars(select(Device).where(Device.provider_device_id == nodeid))
            ).one()
        await mc.local_relay(meshcentral, nodeid)
        for _ in range(50):
            if len(await live.events(nodeid, filter_="relaylog")) == 2:
                break
            await asyncio.sleep(0.1)
        # The server is shared by the run: earlier tests' devices come with the sync too.
        assert await service.sweep_devices(app.state.sessionmaker, every=EVERY) >= 2
        alerts = [p["data"] for t, p in await audit_events(app, "_system") if t == "provider.alert"]
        mine = [a for a in alerts if a["device_id"] == device.id]
        assert [(a["kind"], a["alert"]) for a in mine] == [
            ("connection.started", "no_approved_request"),
            ("connection.ended", "no_approved_request"),
        ]
    finally:
        await registry.reset()
