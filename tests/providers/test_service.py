"""The provider calls the session lifecycle makes, on SQLite and PostgreSQL, with a fake
provider: grant after an approval, withdraw what an end owes back, retries, reconciliation."""

from __future__ import annotations

import asyncio
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
            state=values.pop("state", "approved"),
            requested_at=now - timedelta(minutes=2),
            approved_at=values.pop("approved_at", now - timedelta(minutes=1)),
            **values,
        )
        db.add(row)
        await db.commit()
    return row


async def types(app: Any, stream: str = REF) -> list[str]:
    return [t for t, _ in await audit_events(app, stream)]


async def granted(app: Any, session: RemoteSession) -> service.Grant:
    """Ask the provider as the lifecycle does after the approval's commit, and commit."""
    async with app.state.sessionmaker() as db:
        outcome = await service.grant(db, session.id)
        await db.commit()
    return outcome


async def ended(app: Any, session: RemoteSession) -> None:
    """End the session as a move does: the debt in its transaction, then the withdrawal."""
    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, session.id)
        assert row is not None
        row.state, row.ended_at = "ended", datetime.now(UTC)
        await service.owe_end(db, row)
        await db.commit()
        await service.withdraw(db, session.id)


async def test_grant_creates_access_once_and_audits_it(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    assert await granted(app, session) == service.Grant()
    async with app.state.sessionmaker() as db:
        launch = await service.launch_for(db, session)
    assert launch is not None
    assert launch.url is not None
    assert launch.expires_at == session.approved_at + timedelta(minutes=30)
    assert await granted(app, session) == service.Grant()  # a retry must not re-create
    async with app.state.sessionmaker() as db:
        link = await db.get(ProviderSessionLink, session.id)
    assert fake.prepared == [session.id]
    assert link is not None
    assert link.handle == launch.handle
    payload = next(p for t, p in await audit_events(app, REF) if t == "provider.prepared")
    assert payload["data"]["handle"] == launch.handle
    assert payload["data"]["opens"] == ["url"]
    assert "secret=bearer" not in str(payload)  # the link itself is a credential


async def test_grant_failure_is_audited_for_the_caller_to_commit(
    app: Any, fake: FakeProvider
) -> None:
    session = await approved_session(app)
    fake.down = True
    outcome = await granted(app, session)
    assert outcome.problem == "provider fake could not open the session: fake provider is down"
    assert outcome.provider == "fake"
    assert "provider.prepare_failed" in await types(app)
    async with app.state.sessionmaker() as db:
        assert await db.get(ProviderSessionLink, session.id) is None


async def test_grant_holds_no_transaction_while_the_provider_answers(
    app: Any, fake: FakeProvider
) -> None:
    """Another writer gets through while the provider is still answering the grant."""
    session = await approved_session(app)
    answering, release = asyncio.Event(), asyncio.Event()

    async def slow_prepare(*args: Any) -> Any:
        answering.set()
        await release.wait()
        return await quick_prepare(*args)

    quick_prepare, fake.prepare = fake.prepare, slow_prepare  # type: ignore[method-assign]
    grant = asyncio.create_task(granted(app, session))
    await asyncio.wait_for(answering.wait(), 30)
    tech, _ = await make_user(app, "technician")  # a write transaction of its own
    assert tech.id
    release.set()
    assert await asyncio.wait_for(grant, 30) == service.Grant()
    assert fake.prepared == [session.id]


async def test_a_session_that_ended_during_the_grant_is_withdrawn(
    app: Any, fake: FakeProvider
) -> None:
    """The end commits while the provider answers (no link yet to owe back): the grant
    sees the ended session when it writes the link, and owes the access back at once."""
    session = await approved_session(app)
    answering, release = asyncio.Event(), asyncio.Event()

    async def slow_prepare(*args: Any) -> Any:
        answering.set()
        await release.wait()
        return await quick_prepare(*args)

    quick_prepare, fake.prepare = fake.prepare, slow_prepare  # type: ignore[method-assign]
    async with app.state.sessionmaker() as db:
        grant = asyncio.create_task(service.grant(db, session.id))
        await asyncio.wait_for(answering.wait(), 30)
        async with app.state.sessionmaker() as other:
            row = await other.get(RemoteSession, session.id)
            assert row is not None
            row.state, row.revoked_at = "revoked", datetime.now(UTC)
            assert not await service.owe_end(other, row)  # nothing granted yet
            await other.commit()
        release.set()
        outcome = await asyncio.wait_for(grant, 30)
        assert outcome == service.Grant(withdraw=True)
        await db.commit()
        assert await service.withdraw(db, session.id)
    assert fake.ended == [f"share-{session.id}"]
    story = await types(app)
    assert story.index("provider.prepared") < story.index("provider.ended")


async def test_withdraw_removes_access(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    await granted(app, session)
    async with app.state.sessionmaker() as db:
        launch = await service.launch_for(db, session)
    assert launch is not None
    await ended(app, session)
    await ended(app, session)  # twice (revoke after end) is harmless
    async with app.state.sessionmaker() as db:
        link = await db.get(ProviderSessionLink, session.id)
        assert await service.launch_for(db, session) is None
    assert fake.ended == [launch.handle]
    assert link is not None
    assert link.ended_at is not None
    assert not link.end_pending
    assert link.launch_url is None
    assert (await types(app)).count("provider.ended") == 1


async def test_outage_at_end_is_recorded_and_retried(app: Any, fake: FakeProvider) -> None:
    session = await approved_session(app)
    await granted(app, session)
    async with app.state.sessionmaker() as db:
        launch = await service.launch_for(db, session)
    assert launch is not None
    fake.down = True
    await ended(app, session)  # must not raise: the session really ended
    assert "provider.end_pending" in await types(app)
    fake.down = False
    assert await service.retry_pending_ends(app.state.sessionmaker) == 1
    assert await service.retry_pending_ends(app.state.sessionmaker) == 0
    assert fake.ended == [launch.handle]
    assert "provider.ended" in await types(app)


async def test_an_end_owed_before_a_crash_is_withdrawn_by_the_retry(
    app: Any, fake: FakeProvider
) -> None:
    """The end committed with its debt, and the process died before withdrawing."""
    session = await approved_session(app)
    await granted(app, session)
    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, session.id)
        assert row is not None
        row.state, row.ended_at = "ended", datetime.now(UTC)
        assert await service.owe_end(db, row)
        await db.commit()  # ... and nothing ran after it
    assert fake.ended == []
    assert await service.retry_pending_ends(app.state.sessionmaker) == 1
    assert fake.ended == [f"share-{session.id}"]


async def test_owed_grants_are_approvals_without_access(app: Any, fake: FakeProvider) -> None:
    tech, _ = await make_user(app, "technician")
    group = await make_group(app, [tech])
    device = await make_device(app, group, provider="fake", provider_device_id="node-1")
    owed = await approved_session(app, device=device)
    fresh = await approved_session(app, device=device, approved_at=datetime.now(UTC))
    done = await approved_session(app, device=device)
    await granted(app, done)
    ended_row = await approved_session(app, device=device, state="ended")
    before = datetime.now(UTC) - timedelta(seconds=30)
    found = await service.owed_grants(app.state.sessionmaker, before=before)
    assert found == [owed.id]
    assert fresh.id not in found
    assert ended_row.id not in found


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
    with pytest.raises(ProviderError, match="not set up yet: set SUPPORTBROKER_PROVIDER_"):
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
    await granted(app, session)
    async with app.state.sessionmaker() as db:  # read back as the console does, later
        launch = await service.launch_for(db, session)
    assert launch is not None
    assert (launch.terminal, launch.port) == (fake.terminal, 5900)
    assert launch.details == {"group": launch.details["group"]}  # bookkeeping stays inside
    payload = next(p for t, p in await audit_events(app, REF) if t == "provider.prepared")
    assert payload["data"]["opens"] == ["url", "terminal", "port"]
