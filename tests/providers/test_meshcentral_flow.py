"""The broker flow through MeshCentral: sync, approve → share, end → share gone, reconcile.

The live tests run against the real MeshCentral fixture, one of them from the technician's
HTTP request to the verified evidence bundle, with a real outside connection (MeshCentral's
local relay) flagged from MeshCentral's own relay log. Reconciling connections made through
our share is checked with relay records shaped exactly as MeshCentral 1.1.55's meshrelay.js
writes them (a share connection needs a MeshCentral agent on the device; tests have none).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from audit.bundle import verify_bundle
from broker.devices.models import Device, DeviceGroup
from broker.evidence.queries import verify_all
from broker.providers import registry, service
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.provider import MeshCentralProvider, guest_name
from broker.providers.service import reconcile_due
from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket
from tests.factories import (
    Desk,
    audit_events,
    consent_token,
    make_group,
    make_token,
    make_user,
    request_session,
)
from tests.providers import meshcentral_server as mc
from tests.providers.conftest import mc_settings

REF = "helpdesk:HD-4711"


async def _session(
    app: Any, device: Device, *, provider: str = "meshcentral", ago: timedelta = timedelta(0)
) -> RemoteSession:
    tech, _ = await make_user(app, "technician")
    async with app.state.sessionmaker() as db:
        ticket = Ticket(system="helpdesk", external_id="HD-4711", subject="Disk 100% full")
        db.add(ticket)
        await db.flush()
        now = datetime.now(UTC) - ago
        row = RemoteSession(
            ticket_id=ticket.id,
            technician_id=tech.id,
            device_id=device.id,
            provider=provider,
            reason="Disk 100% full, clean up %TEMP%",
            capabilities=["view", "control", "files"],
            duration_minutes=20,
            state="approved",
            requested_at=now - timedelta(minutes=1),
            approved_at=now,
        )
        db.add(row)
        await db.commit()
    return row


@pytest.fixture
async def live(meshcentral: mc.MeshServer) -> AsyncIterator[MeshCentralProvider]:
    provider = MeshCentralProvider(mc_settings(meshcentral))
    registry.install("meshcentral", provider)
    yield provider
    await registry.reset()


async def test_full_flow_against_real_meshcentral(app: Any, live: MeshCentralProvider) -> None:
    group_name = f"Branch-{secrets.token_hex(3)}"
    meshid = await admin.create_group(live.control, group_name)
    nodeid = await admin.add_local_device(live.control, meshid, "pc-branch-01", "10.1.2.3")

    async with app.state.sessionmaker() as db:
        assert await service.sync_devices(db, "meshcentral") >= 1
        await db.commit()
        device = (await db.scalars(select(Device).where(Device.provider_device_id == nodeid))).one()
        group = await db.get(DeviceGroup, device.group_id)
    assert device.name == "pc-branch-01"
    assert group is not None
    assert group.name == group_name

    session = await _session(app, device)
    async with app.state.sessionmaker() as db:
        assert await service.grant(db, session.id) == service.Grant()
        await db.commit()
        launch = await service.launch_for(db, session)
    assert launch is not None
    shares = {s["publicid"]: s for s in await live.shares(nodeid)}
    assert launch.handle in shares
    assert shares[str(launch.handle)]["p"] == 2 | 4
    notes = [e["msg"] for e in await live.events(nodeid) if e.get("action") == "manual"]
    assert any(REF in n and "%TEMP%" in n for n in notes)

    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, session.id)
        assert row is not None
        row.state, row.ended_at = "ended", datetime.now(UTC)
        assert await service.owe_end(db, row)
        await db.commit()
        assert await service.withdraw(db, session.id)
        assert await service.reconcile(db, row) == 0  # nobody connected to the test device
        await db.commit()
    assert launch.handle not in {s["publicid"] for s in await live.shares(nodeid)}
    types = [t for t, _ in await audit_events(app, REF)]
    assert types.count("provider.prepared") == 1
    assert types.count("provider.ended") == 1


async def test_http_request_to_sealed_evidence_against_real_meshcentral(
    app: Any, client: httpx.AsyncClient, live: MeshCentralProvider, meshcentral: mc.MeshServer
) -> None:
    # MeshCentral's group and device; ours come from the device sync into a group of the
    # same name that the technician serves.
    group_name = f"Desk-{secrets.token_hex(3)}"
    meshid = await admin.create_group(live.control, group_name)
    nodeid = await admin.add_local_device(live.control, meshid, "pc-desk-07", "127.0.0.1")
    tech, _ = await make_user(app, "technician")
    group = await make_group(app, [tech], name=group_name)
    async with app.state.sessionmaker() as db:
        await service.sync_devices(db, "meshcentral")
        await db.commit()
        device = (await db.scalars(select(Device).where(Device.provider_device_id == nodeid))).one()
    assert device.group_id == group.id
    desk = Desk(tech, await make_token(app, tech), group, device)

    # Request → the end user approves → MeshCentral holds a share for exactly that.
    created = await request_session(client, desk, capabilities=["view", "control"])
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    decided = await client.post(
        f"/api/v1/consent/{consent_token(created.json())}/decision",
        json={"decision": "approve", "name": "Erika"},
    )
    assert decided.status_code == 200, decided.text
    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, sid)
        assert row is not None
        launch = await service.launch_for(db, row)
    assert launch is not None
    assert launch.url is not None
    (share,) = [s for s in await live.shares(nodeid) if s["publicid"] == launch.handle]
    assert (share["p"], share["consent"]) == (2, 64 | 1 | 8)  # desktop; toolbar, notify, prompt
    async with httpx.AsyncClient() as browser:  # what the technician's new tab loads
        assert (await browser.get(launch.url)).status_code == 200
    notes = [e["msg"] for e in await live.events(nodeid) if e.get("action") == "manual"]
    assert any(REF in n and sid in n for n in notes)
    started = await client.post(f"/api/v1/sessions/{sid}/start", headers=desk.headers)
    assert started.status_code == 200, started.text

    # Somebody connects to the device past the broker (not through the share).
    await mc.local_relay(meshcentral, nodeid)
    for _ in range(50):
        relays = await live.events(nodeid, filter_="relaylog")
        if len(relays) == 2:
            break
        await asyncio.sleep(0.1)
    assert await reconcile_due(app.state.sessionmaker) == 2  # start and end, both flagged

    ended = await client.post(f"/api/v1/sessions/{sid}/end", headers=desk.headers)
    assert ended.status_code == 200, ended.text
    assert launch.handle not in {s["publicid"] for s in await live.shares(nodeid)}
    later = datetime.now(UTC) + timedelta(minutes=2)
    assert await reconcile_due(app.state.sessionmaker, now=later) == 0  # sealed once only

    story = [t for t, _ in await audit_events(app, REF)]
    for before, after in [
        ("session.requested", "session.approved"),
        ("session.approved", "provider.prepared"),
        ("provider.prepared", "session.active"),
        ("session.ended", "provider.ended"),
    ]:
        assert story.index(before) < story.index(after), story
    alerts = [p["data"] for t, p in await audit_events(app, "_system") if t == "provider.alert"]
    assert [(a["kind"], a["alert"], a["user"], a["protocol"]) for a in alerts] == [
        ("connection.started", "no_approved_request", "Admin", "tcp"),
        ("connection.ended", "no_approved_request", "Admin", "tcp"),
    ]
    assert {a["device_id"] for a in alerts} == {device.id}
    async with app.state.sessionmaker() as db:
        report = await verify_all(db)
        assert report.ok, report.problem
        bundle = await app.state.audit_log.export_bundle(
            await db.connection(), REF, include_plaintext=False
        )
    sealed = verify_bundle(bundle, app.state.audit_log.signer.verifier)
    assert sealed.ok, sealed.problem
    assert launch.url not in bundle.decode("latin-1")  # the bearer link is never evidence


class RelayLogControl:
    """Stands in for the control channel: answers ``events`` with given relay records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.userinfo: dict[str, Any] = {}
        self.serverinfo: dict[str, Any] = {}

    async def request(self, command: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert command["action"] == "events"
        assert command["filter"] == "relaylog"
        return {"action": "events", "events": self.records, "nodeid": command["nodeid"]}

    async def aclose(self) -> None:
        return None


def _relay(msgid: int, at: datetime, args: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "action": "relaylog",
        "userid": "user//admin",
        "username": "admin",
        "msgid": msgid,
        "msgArgs": args,
        "msg": "relay",
        "protocol": 2,
        "time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        **extra,
    }


async def test_relay_log_is_sealed_and_strangers_flagged(app: Any) -> None:
    tech, _ = await make_user(app, "technician")
    group = await make_group(app, [tech])
    async with app.state.sessionmaker() as db:
        device = Device(
            name="pc", group_id=group.id, provider="meshcentral", provider_device_id="node//abc"
        )
        db.add(device)
        await db.commit()
    session = await _session(app, device, ago=timedelta(minutes=5))
    assert session.approved_at is not None
    t0 = session.approved_at
    ours = guest_name(
        _spec_for(session.id)  # the guest name our share carries
    )
    records = [
        _relay(15, t0 + timedelta(seconds=30), ["r1", "203.0.113.7", "10.0.0.5"], guestname=ours),
        _relay(
            11, t0 + timedelta(seconds=90), ["r1", "203.0.113.7", "10.0.0.5", 60], guestname=ours
        ),
        _relay(
            15, t0 + timedelta(seconds=40), ["r2", "198.51.100.9", "10.0.0.5"], username="mallory"
        ),
    ]
    provider = MeshCentralProvider(
        mc_settings(mc.MeshServer(directory=None, port=1, login_key_hex="00" * 80)),  # type: ignore[arg-type]
        control=RelayLogControl(records),  # type: ignore[arg-type]
    )
    registry.install("meshcentral", provider)
    try:
        async with app.state.sessionmaker() as db:
            assert await service.reconcile(db, session) == 3
            await db.commit()
            assert await service.reconcile(db, session) == 0
    finally:
        await registry.reset()
    sealed = [p["data"] for t, p in await audit_events(app, REF) if t == "provider.connection"]
    assert [(d["kind"], d["source_address"], d.get("duration_seconds")) for d in sealed] == [
        ("connection.started", "203.0.113.7", None),
        ("connection.ended", "203.0.113.7", 60),
    ]
    alerts = [p["data"] for t, p in await audit_events(app, "_system") if t == "provider.alert"]
    assert [(a["user"], a["source_address"], a["alert"]) for a in alerts] == [
        ("mallory", "198.51.100.9", "no_approved_request")
    ]


def _spec_for(session_id: str) -> Any:
    from broker.providers.base import SessionSpec, Window

    now = datetime.now(UTC)
    return SessionSpec(session_id, REF, "Tech", "r", ("view",), Window(now, now))
