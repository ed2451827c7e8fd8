"""The whole story of a session, written back to each desk's fake, in order, once per step.

Request (device and asset tag), consent (who, which rights, the receipt's digest), start, an
expert joining, a file moving (name, size, SHA-256, as the log holds it), the end (who, why,
how long), the evidence digest with the verify command, the end user's rating: one internal
note per step, each ending with its (session, step) marker, on SQLite and PostgreSQL. The
expert's join and the file transfer are what the gateway records (``gateway.access.attach``,
``gateway.service.record_file_transfer``); they are called here as the gateway calls them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from audit.canonical import canonical_json
from broker.auth.permissions import grants_for
from broker.auth.principal import Principal
from broker.connectors import registry as registry_mod
from broker.connectors.outbox import deliver_due
from broker.gateway import access, service
from broker.sessions import invitations
from tests.connectors.harness import Harness, harness
from tests.connectors.test_session_flow import act, decide, on
from tests.factories import (
    Desk,
    audit_events,
    consent_token,
    make_device,
    make_group,
    make_token,
    make_user,
)

STEPS = ["request", "consent", "start", "expert-1", "file-1", "end", "evidence", "rating"]
FILE = {"name": "driver-setup.exe", "size": 48_211, "sha256": "ab" * 32, "direction": "upload"}


@pytest.fixture
async def hd(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = harness(request.param)
    registry = h.registry()
    registry_mod.install(registry)
    yield h
    registry_mod.install(None)
    await registry.aclose()


def principal(user: Any) -> Principal:
    return Principal("user", user.role, user.username, grants_for(user.role), user_id=user.id)


class StoryDesk(Desk):
    expert: Any


async def story(app: Any, client: httpx.AsyncClient, desk: StoryDesk, h: Harness) -> str:
    response = await client.post(
        "/api/v1/sessions",
        json={
            **on(h.open_id, h.kind),
            "device_id": desk.device.id,
            "reason": "Printer driver keeps crashing after the update",
            "capabilities": ["view", "control", "files"],
            "duration_minutes": 30,
        },
        headers=desk.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    sid = str(created["id"])
    await decide(client, created, "approve")
    await act(client, desk, sid, "start")
    expert = desk.expert
    async with app.state.sessionmaker() as db, db.begin():
        await invitations.invite(db, principal(desk.tech), sid, expert.id)
    async with app.state.sessionmaker() as db, db.begin():  # the expert joins the terminal
        record = await access.authorize(db, principal(expert), sid, "join")
        await access.attach(db, principal(expert), record, "join")
    async with app.state.sessionmaker() as db, db.begin():  # the agent reports a file
        await service.record_file_transfer(db, desk.device, {"session_id": sid, **FILE})
    await act(client, desk, sid, "end", reason="driver reinstalled")
    rated = await client.post(
        f"/api/v1/consent/{consent_token(created)}/rating",
        json={"score": 5, "comment": "Quick and friendly"},
    )
    assert rated.status_code == 200, rated.text
    return sid


@pytest.mark.parametrize(
    "hd", ["zammad", "glpi", "jira", "freshdesk", "osticket-api"], indirect=True
)
async def test_the_whole_story_arrives_in_order_once(
    app: Any, client: httpx.AsyncClient, hd: Harness
) -> None:
    tech, _ = await make_user(app, "technician")
    expert, _ = await make_user(app, "technician", username="erik.expert")
    group = await make_group(app, [tech, expert])
    device = await make_device(app, group, asset_tag="INV-2024-0815")
    desk = StoryDesk(tech, await make_token(app, tech), group, device)
    desk.expert = expert
    sid = await story(app, client, desk, hd)
    assert await deliver_due(app.state.sessionmaker) == len(STEPS)
    notes = [n for n in hd.fake.notes if n["ticket"] == hd.open_id]
    markers = [re.search(r"\[supportbroker-ref ([^\]]+)\]", n["text"]) for n in notes]
    assert [m.group(1) if m else None for m in markers] == [f"{sid}/{s}" for s in STEPS]
    assert all(n["internal"] for n in notes)
    text = dict(zip(STEPS, [n["text"] for n in notes], strict=True))

    assert "INV-2024-0815" in text["request"]
    assert "Rights approved: control, files, view" in text["consent"]
    events = await audit_events(app, f"{hd.kind}:{hd.open_id}")
    receipt = next(p["data"] for t, p in events if t == "consent.decided")
    digest = hashlib.sha256(canonical_json(receipt)).hexdigest()
    assert f"Consent receipt (SHA-256): {digest}" in text["consent"]
    assert "Expert: erik.expert" in text["expert-1"]
    assert "driver-setup.exe" in text["file-1"]
    assert "48211 bytes" in text["file-1"]
    assert "ab" * 32 in text["file-1"]
    assert f"Ended by: {desk.tech.display_name}" in text["end"]
    assert "Ended because: driver reinstalled" in text["end"]
    assert "Duration:" in text["end"]
    assert "asset tag INV-2024-0815" in text["end"]
    assert "supportbroker audit verify" in text["evidence"]
    assert "rated the remote session 5 out of 5" in text["rating"]
    assert "Quick and friendly" in text["rating"]

    # Nothing is queued twice, and nothing is left to send.
    assert await deliver_due(app.state.sessionmaker) == 0
    assert len([n for n in hd.fake.notes if n["ticket"] == hd.open_id]) == len(STEPS)
