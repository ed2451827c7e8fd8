"""The provider hooks the sessions flow calls, on SQLite and PostgreSQL, with a fake provider."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import Any

import pytest
from sqlalchemy import select

from broker.devices.models import Device, DeviceGroup
from broker.errors import NotFound, ProviderError
from broker.providers import registry, service
from broker.providers.base import RemoteAccessProvider, RemoteDevice
from broker.providers.models import ProviderEventMark, ProviderSessionLink
from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket
from tests.factories import audit_events, make_device, make_group, make_user
from tests.providers.fakes import FakeProvider, connection

REF = "helpdesk:HD-4711"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider()
    registry.install("fake", provider)
    yield provider
    await registry.reset()


async def approved_session(
    app: Any, *, device: Device | None = None, minutes: int = 30, **values: Any
) -> RemoteSession:
    tech, _ = await make_user(app, "technician")
    if device is None:
        group = await make_group(app, [tech], name=f"desk-{secrets.token_hex(2)}")
        device = await make_device(app, group, provider="fake", provider_device_id="node-1")
    async with app.state.sessionmaker() as db:
        ticket = (
            await db.scalars(
                select(Ticket).where(Ticket.system == "helpdesk", Ticket.external_id == "HD-4711")
            )
        ).first()
        if ticket is None:
            ticket = Ticket(system="helpdesk", external_id="HD-4711", subject="Printer 100% dead")
            db.add(ticket)
            await db.flush()
        now = datetime.now(UTC)
        row = RemoteSession(
            ticket_id=ticket.id,
            technician_id=tech.id,
            device_id=device.id,
            provider="fake",
            reason="Printer driver keeps crashing",
            capabilities=["view", "control"],
            duration_minutes=minutes,
            state="approved",
            requested_at=now - timedelta(minutes=2),
            approved_at=values.pop("approved_at", now - timedelta(minutes=1)),
            **values,
        )
        db.add(row)
        await db.commit()
    return row


async def types(app: Any, stream: str = REF) -> list[str]:
    return [t for t, _ in await audit_events(app, stream)]


async def test_on_approved_creates_access_once_and_audits_it(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    async with app.state.sessionmaker() as db:
        launch = await service.on_approved(db, session)
        await db.commit()
    assert launch.url is not None
    assert launch.expires_at == session.approved_at + timedelta(minutes=30)
    async with app.state.sessionmaker() as db:
        again = await service.on_approved(db, session)  # a retried request must not re-create
        await db.commit()
        link = await db.get(ProviderSessionLink, session.id)
    assert again.handle == launch.handle
    assert fake.prepared == [session.id]
    assert link is not None
    assert link.handle == launch.handle
    payload = next(p for t, p in await audit_events(app, REF) if t == "provider.prepared")
    assert payload["data"]["handle"] == launch.handle
    assert payload["data"]["opens"] == ["url"]
    assert "secret=bearer" not in str(payload)  # the link itself is a credential


async def test_prepare_failure_is_audited_and_kept(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    fake.down = True
    async with app.state.sessionmaker() as db:
        with pytest.raises(ProviderError) as info:
            await service.on_approved(db, session)
        assert info.value.keep_changes  # the request's transaction commits the event
        await db.commit()
    assert "provider.prepare_failed" in await types(app)
    async with app.state.sessionmaker() as db:
        assert await db.get(ProviderSessionLink, session.id) is None


async def test_on_ended_removes_access(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    async with app.state.sessionmaker() as db:
        launch = await service.on_approved(db, session)
        await service.on_ended(db, session)
        await service.on_ended(db, session)  # twice (revoke after end) is harmless
        await db.commit()
        link = await db.get(ProviderSessionLink, session.id)
        assert await service.launch_for(db, session) is None
    assert fake.ended == [launch.handle]
    assert link is not None
    assert link.ended_at is not None
    assert link.launch_url is None
    assert (await types(app)).count("provider.ended") == 1


async def test_outage_at_end_is_recorded_and_retried(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    async with app.state.sessionmaker() as db:
        launch = await service.on_approved(db, session)
        await db.commit()
    fake.down = True
    async with app.state.sessionmaker() as db:
        await service.on_ended(db, session)  # must not raise: the session really ended
        await db.commit()
    assert "provider.end_pending" in await types(app)
    fake.down = False
    async with app.state.sessionmaker() as db:
        assert await service.retry_pending_ends(db) == 1
        await db.commit()
        assert await service.retry_pending_ends(db) == 0
    assert fake.ended == [launch.handle]
    assert "provider.ended" in await types(app)


async def test_reconcile_seals_connections_and_flags_the_rest(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app, minutes=10)
    start = session.approved_at
    assert start is not None
    fake.events = [
        connection("in", "node-1", timedelta(minutes=1), start, session_id=session.id),
        # Through our access but still running after the window: closed and flagged.
        connection(
            "late", "node-1", timedelta(minutes=2), start, session_id=session.id, active=True
        ),
        # Nobody asked for this one.
        connection("stranger", "node-1", timedelta(minutes=3), start, session_id=None, active=True),
        connection("other-device", "node-2", timedelta(minutes=1), start, session_id=None),
    ]
    # Make the window over: approved 20 minutes ago for 10 minutes.
    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, session.id)
        assert row is not None
        row.approved_at = datetime.now(UTC) - timedelta(minutes=20)
        for i, event in enumerate(fake.events):
            object.__setattr__(event, "at", row.approved_at + timedelta(minutes=1 + i))
        await db.commit()
        count = await service.reconcile(db, row)
        await db.commit()
        assert await service.reconcile(db, row) == 0  # each provider event is sealed once
    assert count == 1 + 2 + 1
    ticket_events = await audit_events(app, REF)
    connections = [p["data"] for t, p in ticket_events if t == "provider.connection"]
    assert sorted(c["provider_event"] for c in connections) == ["in", "late"]
    alerts = [p["data"] for t, p in ticket_events if t == "provider.alert"]
    assert [(a["provider_event"], a["alert"], a["closed"]) for a in alerts] == [
        ("late", "outside_window", True)
    ]
    system_alerts = [
        p["data"] for t, p in await audit_events(app, "_system") if t == "provider.alert"
    ]
    assert [(a["provider_event"], a["alert"]) for a in system_alerts] == [
        ("stranger", "no_approved_request")
    ]
    assert sorted(fake.terminated) == ["late", "stranger"]
    assert fake.annotated["in"].startswith(REF)


async def test_reconcile_leaves_another_sessions_connection_alone(
    app: Any, fake: FakeProvider
) -> None:
    first = await approved_session(app)
    async with app.state.sessionmaker() as db:
        device = await db.get(Device, first.device_id)
    second = await approved_session(app, device=device)
    assert first.approved_at is not None
    fake.events = [
        connection(
            "theirs", "node-1", timedelta(seconds=5), first.approved_at, session_id=second.id
        )
    ]
    async with app.state.sessionmaker() as db:
        assert await service.reconcile(db, first) == 0
        await db.commit()
        assert await service.reconcile(db, second) == 1
        await db.commit()
        marks = (await db.scalars(select(ProviderEventMark))).all()
    assert [(m.event_key, m.session_id, m.verdict) for m in marks] == [
        ("theirs", second.id, "connection")
    ]


async def test_reconcile_during_an_outage_loses_nothing(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    assert session.approved_at is not None
    fake.events = [
        connection("c1", "node-1", timedelta(seconds=5), session.approved_at, session_id=session.id)
    ]
    fake.down = True
    async with app.state.sessionmaker() as db:
        with pytest.raises(ProviderError):
            await service.reconcile(db, session)
        await db.rollback()
    fake.down = False
    async with app.state.sessionmaker() as db:
        assert await service.reconcile(db, session) == 1
        await db.commit()
    assert "provider.connection" in await types(app)


async def test_sync_devices_imports_groups_and_devices(app: Any, fake: FakeProvider) -> None:
    fake.devices = [
        RemoteDevice("n1", "Reception PC", "Front desk"),
        RemoteDevice("n2", "Kiosk", "Lobby"),
    ]
    async with app.state.sessionmaker() as db:
        assert await service.sync_devices(db, "fake") == 2
        await db.commit()
        assert await service.sync_devices(db, "fake") == 0
        fake.devices[0] = RemoteDevice("n1", "Reception PC 2", "Lobby")
        assert await service.sync_devices(db, "fake") == 1
        await db.commit()
        rows = (await db.scalars(select(Device).where(Device.provider == "fake"))).all()
        groups = {g.id: g.name for g in (await db.scalars(select(DeviceGroup))).all()}
    assert sorted((d.name, groups[d.group_id]) for d in rows) == [
        ("Kiosk", "Lobby"),
        ("Reception PC 2", "Lobby"),
    ]
    assert "provider.devices_synced" in await types(app, "_system")


async def test_registry_knows_builtins_and_refuses_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    await registry.reset()
    assert {"null", "meshcentral", "anydesk"} <= set(registry.available())
    assert registry.get("null").name == "null"
    with pytest.raises(NotFound):
        registry.get("teamviewer")
    for var in ("LOGIN_KEY", "PASSWORD"):
        monkeypatch.delenv(f"SUPPORTBROKER_PROVIDER_MESHCENTRAL_{var}", raising=False)
    with pytest.raises(ProviderError, match="not configured"):
        registry.get("meshcentral")
    await registry.reset()


async def test_providers_are_discovered_through_entry_points() -> None:
    found = {ep.name: ep for ep in entry_points(group=registry.GROUP)}
    assert {"null", "meshcentral", "anydesk", "agent"} <= set(found)
    port = [m for m in dir(RemoteAccessProvider) if not m.startswith("_") and m != "name"]
    for ep in found.values():
        cls = ep.load()
        assert callable(getattr(cls, "from_env", None)), ep.name
        assert all(callable(getattr(cls, m, None)) for m in port), ep.name
    # The agent provider is not a built-in fallback: only its entry point makes it known.
    assert "agent" not in registry.BUILTIN
    await registry.reset()
    try:
        agent = registry.get("agent")
        assert isinstance(agent, RemoteAccessProvider)
        assert agent.name == "agent"
    finally:
        await registry.reset()


async def test_launch_keeps_terminal_and_port_for_the_console(app: Any, fake: FakeProvider) -> None:
    fake.terminal, fake.port = "supportbroker connect s1 --forward 5900:5900", 5900
    session = await approved_session(app)
    async with app.state.sessionmaker() as db:
        await service.on_approved(db, session)
        await db.commit()
    async with app.state.sessionmaker() as db:  # read back as the console does, later
        launch = await service.launch_for(db, session)
    assert launch is not None
    assert (launch.terminal, launch.port) == (fake.terminal, 5900)
    assert launch.details == {"group": launch.details["group"]}  # bookkeeping stays inside
    payload = next(p for t, p in await audit_events(app, REF) if t == "provider.prepared")
    assert payload["data"]["opens"] == ["url", "terminal", "port"]
