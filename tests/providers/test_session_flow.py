"""The sessions flow drives the providers, through HTTP, on SQLite and PostgreSQL.

Approval prepares the provider's access (a fake that records calls and fails on demand,
and AnyDesk against its fake API); every end from approved or active withdraws it; a
provider that cannot prepare fails the session with its reason; the background job seals
what the provider recorded while the session runs and once after its end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.evidence.service import SYSTEM_ACTOR
from broker.providers import registry
from broker.providers.anydesk.provider import AnyDeskProvider
from broker.providers.anydesk.settings import AnyDeskSettings
from broker.providers.models import ProviderSessionLink
from broker.providers.service import launch_for, reconcile_due, retry_pending_ends
from broker.sessions import service as sessions
from broker.sessions.models import RemoteSession
from broker.sessions.service import sweep_deadlines
from tests.factories import (
    Desk,
    audit_events,
    bearer,
    consent_token,
    make_desk,
    make_device,
    make_token,
    make_user,
    request_session,
    update_session_row,
)
from tests.providers.fake_anydesk import FakeAnyDesk
from tests.providers.fakes import FakeProvider, connection

REF = "helpdesk:HD-4711"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider()
    registry.install("fake", provider)
    yield provider
    await registry.reset()


@pytest.fixture
async def desk(app: Any, fake: FakeProvider) -> Desk:
    desk = await make_desk(app, unattended_allowed=True)
    desk.device = await make_device(app, desk.group, provider="fake", provider_device_id="node-1")
    return desk


async def requested(client: httpx.AsyncClient, desk: Desk, **body: Any) -> dict[str, Any]:
    response = await request_session(client, desk, **body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def approved(client: httpx.AsyncClient, desk: Desk) -> dict[str, Any]:
    created = await requested(client, desk)
    response = await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": "approve", "name": "Erika"},
    )
    assert response.status_code == 200, response.text
    return created


async def post(client: httpx.AsyncClient, path: str, headers: dict[str, str], **body: Any) -> Any:
    response = await client.post(path, json=body or None, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def active(client: httpx.AsyncClient, desk: Desk) -> str:
    created = await approved(client, desk)
    await post(client, f"/api/v1/sessions/{created['id']}/start", desk.headers)
    sid: str = created["id"]
    return sid


async def types(app: Any, stream: str = REF) -> list[str]:
    return [t for t, _ in await audit_events(app, stream)]


async def link_of(app: Any, sid: str) -> ProviderSessionLink:
    async with app.state.sessionmaker() as db:
        link = await db.get(ProviderSessionLink, sid)
    assert link is not None
    return link


async def test_approval_prepares_and_the_end_withdraws(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    created = await approved(client, desk)
    sid = created["id"]
    assert fake.prepared == [sid]
    async with app.state.sessionmaker() as db:
        session = await db.get(RemoteSession, sid)
        assert session is not None
        launch = await launch_for(db, session)
    assert launch is not None
    assert launch.url == f"https://fake.test/share/{sid}?secret=bearer"
    await post(client, f"/api/v1/sessions/{sid}/start", desk.headers)
    assert fake.ended == []
    await post(client, f"/api/v1/sessions/{sid}/end", desk.headers, reason="done")
    assert fake.ended == [f"share-{sid}"]
    story = await types(app)
    assert story.index("session.approved") < story.index("provider.prepared")
    assert story.index("session.ended") < story.index("provider.ended")
    assert (await link_of(app, sid)).ended_at is not None


@pytest.mark.parametrize("how", ["revoke", "cancel", "end_user", "timeout", "failure"])
async def test_every_end_withdraws_access(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider, how: str
) -> None:
    created = await approved(client, desk)
    sid = created["id"]
    expected = {
        "revoke": "revoked",
        "cancel": "revoked",
        "end_user": "revoked",
        "timeout": "expired",
        "failure": "failed",
    }[how]
    if how == "revoke":
        await post(client, f"/api/v1/sessions/{sid}/start", desk.headers)
        admin, _ = await make_user(app, "admin")
        await post(client, f"/api/v1/sessions/{sid}/revoke", bearer(await make_token(app, admin)))
    elif how == "cancel":
        await post(client, f"/api/v1/sessions/{sid}/cancel", desk.headers)
    elif how == "end_user":
        await post(client, f"/api/v1/consent/{consent_token(created)}/revoke", {}, name="Erika")
    elif how == "timeout":
        await update_session_row(app, sid, deadline_at=utcnow() - timedelta(seconds=1))
        async with transaction(app.state.sessionmaker) as db:
            assert await sweep_deadlines(db) == 1
    else:  # the gateway losing the agent, a locked consent ...: the service's fail path
        async with transaction(app.state.sessionmaker) as db:
            record, _ = await sessions.load(db, sid)
            await sessions.fail_session(db, record, actor=SYSTEM_ACTOR, why="agent lost")
    got = await client.get(f"/api/v1/sessions/{sid}", headers=desk.headers)
    assert got.json()["state"] == expected
    assert fake.ended == [f"share-{sid}"]
    assert "provider.ended" in await types(app)


async def test_a_provider_that_cannot_prepare_fails_the_session(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    fake.down = True
    created = await approved(client, desk)  # the end user's decision itself succeeds
    got = (await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)).json()
    assert got["state"] == "failed"
    assert got["end_reason"] == "provider fake could not open the session: fake provider is down"
    story = await types(app)
    assert story[story.index("consent.decided") :] == [
        "consent.decided",
        "session.approved",
        "provider.prepare_failed",
        "session.failed",
    ]
    failed = next(p for t, p in await audit_events(app, REF) if t == "session.failed")
    assert failed["actor"] == {"kind": "system", "name": "provider:fake"}
    assert "fake provider is down" in failed["data"]["end_reason"]
    assert fake.ended == []  # nothing was created, nothing to remove
    start = await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    assert start.status_code == 409, start.text


async def test_unattended_request_fails_when_the_provider_is_down(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    fake.down = True
    created = await requested(client, desk, unattended=True)
    assert created["state"] == "failed"
    assert "fake provider is down" in created["end_reason"]


async def test_an_outage_at_the_end_is_retried(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    sid = await active(client, desk)
    fake.down = True
    ended = await post(client, f"/api/v1/sessions/{sid}/end", desk.headers)
    assert ended["state"] == "ended"  # the provider being down does not keep it active
    assert "provider.end_pending" in await types(app)
    assert (await link_of(app, sid)).end_pending
    fake.down = False
    assert await retry_pending_ends(app.state.sessionmaker) == 1
    assert fake.ended == [f"share-{sid}"]
    assert "provider.ended" in await types(app)


async def test_reconciliation_runs_while_active_and_once_after_the_end(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    sid = await active(client, desk)
    now = utcnow()
    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, sid)
        assert row is not None
        base = row.approved_at  # connections inside the approved window
    ms = timedelta(milliseconds=1)
    fake.events.append(connection("c1", "node-1", ms, base, session_id=sid))
    fake.events.append(connection("x1", "node-1", 2 * ms, base, session_id=None))
    fake.down = True
    assert await reconcile_due(app.state.sessionmaker, now=now + timedelta(seconds=5)) == 0
    assert (await link_of(app, sid)).reconciled_at is None  # rolled back: nothing lost
    fake.down = False
    assert await reconcile_due(app.state.sessionmaker, now=now + timedelta(seconds=5)) == 2
    assert "provider.connection" in await types(app)
    assert "provider.alert" in await types(app, "_system")  # the stranger
    # Not due again within the interval.
    assert await reconcile_due(app.state.sessionmaker, now=now + timedelta(seconds=10)) == 0
    first = (await link_of(app, sid)).reconciled_at

    await post(client, f"/api/v1/sessions/{sid}/end", desk.headers)
    # The provider writes its record of the connection as it closes.
    fake.events.append(connection("c2", "node-1", 3 * ms, base, session_id=sid))
    assert await reconcile_due(app.state.sessionmaker) == 0  # waits for the provider's log
    assert (await link_of(app, sid)).reconciled_at == first
    later = utcnow() + timedelta(minutes=2)
    assert await reconcile_due(app.state.sessionmaker, now=later) == 1
    assert [t for t in await types(app) if t == "provider.connection"] == [
        "provider.connection"
    ] * 2
    assert await reconcile_due(app.state.sessionmaker, now=later + timedelta(minutes=5)) == 0


@pytest.fixture
async def anydesk() -> AsyncIterator[FakeAnyDesk]:
    server = FakeAnyDesk()
    settings = AnyDeskSettings(
        api_url="https://v1.api.anydesk.test:8081",
        license_id=server.license_id,
        api_password=SecretStr(server.password),
    )
    registry.install(
        "anydesk", AnyDeskProvider(settings, transport=httpx.ASGITransport(app=server.app()))
    )
    yield server
    await registry.reset()


async def test_anydesk_flow(app: Any, client: httpx.AsyncClient, anydesk: FakeAnyDesk) -> None:
    desk = await make_desk(app)
    desk.device = await make_device(
        app, desk.group, provider="anydesk", provider_device_id="111222333"
    )
    sid = await active(client, desk)
    async with app.state.sessionmaker() as db:
        session = await db.get(RemoteSession, sid)
        assert session is not None
        launch = await launch_for(db, session)
    assert launch is not None
    assert launch.uri == "anydesk:111222333"

    # The technician connects through AnyDesk (AnyDesk counts whole seconds: approval is
    # moved a little into the past so the connection starts inside the window, before now).
    approved_at = utcnow() - timedelta(seconds=10)
    await update_session_row(app, sid, approved_at=approved_at)
    anydesk.add_session("ad-1", "111222333", int(approved_at.timestamp()) + 2, active=True)
    assert await reconcile_due(app.state.sessionmaker) == 1
    assert anydesk.sessions["ad-1"]["comment"] == f"{REF} · supportbroker session {sid}"
    assert anydesk.sessions["ad-1"]["active"] is True

    await post(client, f"/api/v1/sessions/{sid}/end", desk.headers)
    assert "provider.ended" in await types(app)
    # Still connected after the end: the reconciliation after the end closes and flags it.
    assert await reconcile_due(app.state.sessionmaker, now=utcnow() + timedelta(minutes=2)) == 1
    assert anydesk.sessions["ad-1"]["active"] is False
    alert = next(p for t, p in await audit_events(app, REF) if t == "provider.alert")
    assert alert["data"]["alert"] == "outside_window"
    assert alert["data"]["closed"] is True
    assert anydesk.rejected == 0  # every request carried a valid signature


async def test_anydesk_connection_nobody_asked_for_is_closed_and_flagged(
    app: Any, client: httpx.AsyncClient, anydesk: FakeAnyDesk
) -> None:
    desk = await make_desk(app)
    desk.device = await make_device(
        app, desk.group, provider="anydesk", provider_device_id="444555666"
    )
    sid = await active(client, desk)
    approved_at = utcnow() - timedelta(seconds=10)
    await update_session_row(app, sid, approved_at=approved_at)
    # Connected ten minutes before anyone asked (inside the look-back), and still connected.
    anydesk.add_session("ad-x", "444555666", int(approved_at.timestamp()) - 600, active=True)
    assert await reconcile_due(app.state.sessionmaker) == 1
    assert anydesk.sessions["ad-x"]["active"] is False  # closed through the API
    assert anydesk.sessions["ad-x"]["comment"] is None  # not labelled with our ticket
    alert = next(p for t, p in await audit_events(app, "_system") if t == "provider.alert")
    assert alert["data"]["alert"] == "no_approved_request"
    assert (alert["data"]["remote_id"], alert["data"]["closed"]) == ("ad-x", True)
    assert alert["data"]["source_address"] == "anydesk:987654321"
    assert "provider.alert" not in await types(app)  # not this ticket's connection
    assert anydesk.rejected == 0
