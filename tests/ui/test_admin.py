"""The admin pages through HTTP: users (one-time password shown once, roles), tokens (secret
shown once, revoke), device groups with policies and pre-session questions, members,
agent enrollment tokens, and the connectors and providers status page."""

from __future__ import annotations

from typing import Any

from broker.auth.secrets import token_hash
from broker.devices.models import DeviceGroup
from broker.gateway.models import AgentEnrollmentToken
from tests.factories import audit_events, make_user
from tests.ui.browsers import browser


def _secret(html: str) -> str:
    return html.split('id="secret-value">')[1].split("<", maxsplit=1)[0]


async def test_users_tokens_groups_enrollment_status(app: Any) -> None:
    admin, _ = await make_user(app, "admin")
    b = await browser(app, admin)

    created = await b.post(
        "/ui/admin/users", {"username": "tina", "display_name": "Tina Tech", "role": "technician"}
    )
    assert created.status_code == 200
    password = _secret(created.text)
    assert "shown only once" in created.text
    listing = await b.get("/ui/admin/users")
    assert "Tina Tech" in listing.text
    assert password not in listing.text
    assert "must change password" in listing.text
    dup = await b.post("/ui/admin/users", {"username": "tina", "role": "technician"})
    assert dup.status_code == 409
    bad_role = await b.post("/ui/admin/users", {"username": "x1", "role": "superuser"})
    assert bad_role.status_code == 422

    async with app.state.sessionmaker() as db:
        from broker.auth.service import get_user_by_name

        tina = await get_user_by_name(db, "tina")
    last_admin = await b.post(f"/ui/admin/users/{admin.id}", {"role": "auditor", "active": "on"})
    assert last_admin.status_code == 409  # the last active admin cannot be demoted

    token_page = await b.post(
        "/ui/admin/tokens", {"name": "zammad-in", "system": "zammad", "scopes": "tickets:read"}
    )
    assert token_page.status_code == 200
    secret = _secret(token_page.text)
    assert secret.startswith("sbt_")
    too_much = await b.post(
        "/ui/admin/tokens", {"name": "bad", "system": "zammad", "scopes": "users:admin"}
    )
    assert too_much.status_code == 422
    # A user's token is listed under the user's name, never their id.
    mine = await b.post("/ui/admin/tokens", {"name": "tina-cli", "owner": tina.id})
    assert mine.status_code == 200, mine.text
    assert "Tina Tech" in mine.text
    assert f"user {tina.id}" not in mine.text
    # The new-user form starts on the least powerful staff role; no role given: technician.
    users_page = (await b.get("/ui/admin/users")).text
    assert "<option selected>technician</option>" in users_page
    assert (await b.post("/ui/admin/users", {"username": "noro"})).status_code == 200
    async with app.state.sessionmaker() as db:
        assert (await get_user_by_name(db, "noro")).role == "technician"

    # The history links' retention is the admin's policy, stated where group policies are.
    retention = app.state.settings.consent_link_retention_days
    assert f"{retention} day(s)" in (await b.get("/ui/admin/groups")).text
    group_page = await b.post(
        "/ui/admin/groups",
        {
            "name": "front-office",
            "description": "Reception PCs",
            "consent_timeout_seconds": "300",
            "allowed_ports": "3389, 5900",
            "questions": "os: Which operating system?\nsaved: Is your work saved?",
            "record_input": "on",
        },
    )
    assert group_page.status_code == 303
    group_url = group_page.headers["location"]
    async with app.state.sessionmaker() as db:
        from sqlalchemy import select

        group = (
            await db.execute(select(DeviceGroup).where(DeviceGroup.name == "front-office"))
        ).scalar_one()
        assert group.allowed_ports == [3389, 5900]
        assert group.questions == [
            {"id": "os", "label": "Which operating system?"},
            {"id": "saved", "label": "Is your work saved?"},
        ]
        assert group.record_input is True
        assert group.unattended_allowed is False
    bad_q = await b.post(group_url, {"name": "front-office", "questions": "no colon here"})
    assert bad_q.status_code == 422
    assert (await b.post(group_url + "/members", {"user_id": tina.id})).status_code == 303
    assert "Tina Tech" in (await b.get(group_url)).text

    enrolled = await b.post(group_url + "/enrollment-token", {"hours": "2"})
    assert enrolled.status_code == 200
    enrollment = _secret(enrolled.text)
    # The command to run on the device, ready to copy, with this token and the gateway.
    running = getattr(app.state, "gateway", None)
    address = f"{app.state.settings.gateway_host}:{running.port if running else 2222}"
    command = f"supportbroker-agent enroll --broker {address} --token {enrollment}"
    assert command in enrolled.text
    assert "valid until <time datetime=" in enrolled.text
    async with app.state.sessionmaker() as db:
        row = (
            await db.execute(
                select(AgentEnrollmentToken).where(
                    AgentEnrollmentToken.token_hash == token_hash(enrollment)
                )
            )
        ).scalar_one()
        assert row.group_id == group.id

    status = await b.get("/ui/admin")
    assert status.status_code == 200
    for provider in ("null", "meshcentral", "anydesk"):
        assert f"<td>{provider}</td>" in status.text
    # Not set up: the setting to give, not validation text.
    assert "meshcentral is not set up yet: set SUPPORTBROKER_PROVIDER_MESHCENTRAL_" in status.text
    assert "Field required" not in status.text

    types = [t for t, _ in await audit_events(app, "_system")]
    for expected in (
        "user.created",
        "token.created",
        "device_group.created",
        "device_group.member_added",
        "agent.token_created",
    ):
        assert expected in types, expected
    payloads = str(await audit_events(app, "_system"))
    assert password not in payloads
    assert secret not in payloads
    assert enrollment not in payloads
    await b.client.aclose()


async def test_admin_sets_a_technicians_session_limit(app: Any) -> None:
    from broker.auth.models import User

    admin, _ = await make_user(app, "admin")
    tech, _ = await make_user(app, "technician", username="tina")
    b = await browser(app, admin)
    url = f"/ui/admin/users/{tech.id}"
    page = await b.get("/ui/admin/users")
    assert f'id="limit-{tech.id}"' in page.text
    assert "broker&#39;s default (2)" in page.text or "broker's default (2)" in page.text

    saved = await b.post(
        url, {"role": "technician", "active": "on", "max_concurrent_sessions": "5"}
    )
    assert saved.status_code == 303
    async with app.state.sessionmaker() as db:
        assert (await db.get(User, tech.id)).max_concurrent_sessions == 5
    assert 'value="5"' in (await b.get("/ui/admin/users")).text

    for bad in ("0", "101", "two"):
        refused = await b.post(
            url, {"role": "technician", "active": "on", "max_concurrent_sessions": bad}
        )
        assert refused.status_code == 422, bad
    cleared = await b.post(url, {"role": "technician", "active": "on"})
    assert cleared.status_code == 303
    async with app.state.sessionmaker() as db:
        assert (await db.get(User, tech.id)).max_concurrent_sessions is None
    changes = [
        p["data"]["changes"] for t, p in await audit_events(app, "_system") if t == "user.updated"
    ]
    assert {"max_concurrent_sessions": 5} in changes
    await b.client.aclose()
