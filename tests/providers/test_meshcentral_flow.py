"""The broker flow through MeshCentral: sync, approve → share, end → share gone, reconcile.

The live test runs against the real MeshCentral fixture; relay-log reconciliation is also
checked with relay records shaped exactly as MeshCentral 1.1.55's meshrelay.js writes them
(an agentless test device cannot produce relay sessions).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from broker.devices.models import Device, DeviceGroup
from broker.providers import registry, service
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.provider import MeshCentralProvider, guest_name
from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket
from tests.factories import audit_events, make_group, make_user
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
        launch = await service.on_approved(db, session)
        await db.commit()
    shares = {s["publicid"]: s for s in await live.shares(nodeid)}
    assert launch.handle in shares
    assert shares[str(launch.handle)]["p"] == 2 | 4
    notes = [e["msg"] for e in await live.events(nodeid) if e.get("action") == "manual"]
    assert any(REF in n and "%TEMP%" in n for n in notes)

    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, session.id)
        assert row is not None
        row.state, row.ended_at = "ended", datetime.now(UTC)
        await service.on_ended(db, row)
        assert await service.reconcile(db, row) == 0  # nobody connected to the test device
        await db.commit()
    assert launch.handle not in {s["publicid"] for s in await live.shares(nodeid)}
    types = [t for t, _ in await audit_events(app, REF)]
    assert types.count("provider.prepared") == 1
    assert types.count("provider.ended") == 1


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
