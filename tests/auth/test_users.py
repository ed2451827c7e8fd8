"""User administration through the API: create, list, get, update, reset password."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from broker.auth.models import User
from tests.auth.conftest import (
    Browser,
    Caller,
    assert_error,
    browser_login,
    count_rows,
    system_events,
)
from tests.auth.conftest import caller as make_caller

USERS = "/api/v1/users"


async def test_create_list_get(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    body = {
        "username": "erika.m",
        "role": "technician",
        "display_name": "Erika Mustermann",
        "email": "erika@example.test",
        "max_concurrent_sessions": 3,
    }
    created = await client.post(USERS, json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    data = created.json()
    user = data["user"]
    assert user["username"] == "erika.m"
    assert user["role"] == "technician"
    assert user["display_name"] == "Erika Mustermann"
    assert user["email"] == "erika@example.test"
    assert user["must_change_password"] is True
    assert user["is_active"] is True
    assert user["max_concurrent_sessions"] == 3
    otp = data["one_time_password"]
    assert len(otp) >= 12
    listed = await client.get(USERS, headers=admin.headers)
    assert [u["username"] for u in listed.json()["items"]] == ["erika.m", "root"]
    assert otp not in listed.text
    got = await client.get(f"{USERS}/{user['id']}", headers=admin.headers)
    assert got.json() == user
    assert_error(await client.get(f"{USERS}/no-such-id", headers=admin.headers), 404, "not_found")
    events = [p["data"] for _, p in await system_events(app, "user.created")]
    assert events[-1] == {"user_id": user["id"], "username": "erika.m", "role": "technician"}
    assert otp not in str(await system_events(app))
    # The one-time password logs in (and must then be changed).
    login = await client.post("/api/v1/auth/login", json={"username": "erika.m", "password": otp})
    assert login.status_code == 200
    assert login.json()["must_change_password"] is True


async def test_display_name_defaults_to_username(client: httpx.AsyncClient, admin: Caller) -> None:
    created = await client.post(
        USERS, json={"username": "kim", "role": "auditor"}, headers=admin.headers
    )
    assert created.json()["user"]["display_name"] == "kim"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "x1", "role": "superuser"}, 422),
        ({"username": "x2", "role": "Admin"}, 422),
        ({"username": "x3"}, 422),
        ({"username": "Upper", "role": "auditor"}, 422),
        ({"username": "root", "role": "auditor"}, 409),
    ],
)
async def test_create_refusals(
    app: Any, client: httpx.AsyncClient, admin: Caller, body: dict[str, Any], status: int
) -> None:
    response = await client.post(USERS, json=body, headers=admin.headers)
    assert_error(response, status)
    assert await count_rows(app, User) == 1


async def test_update_fields(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    url = f"{USERS}/{tech.user.id}"
    changes = {
        "display_name": "Tina Tech",
        "email": "tina@example.test",
        "max_concurrent_sessions": 4,
    }
    response = await client.patch(url, json=changes, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert {k: response.json()[k] for k in changes} == changes
    cleared = await client.patch(url, json={"email": None}, headers=admin.headers)
    assert cleared.json()["email"] is None
    assert cleared.json()["display_name"] == "Tina Tech"
    promoted = await client.patch(url, json={"role": "auditor"}, headers=admin.headers)
    assert promoted.json()["role"] == "auditor"
    assert_error(await client.patch(url, json={"role": "root"}, headers=admin.headers), 422)
    assert_error(await client.patch(url, json={"display_name": None}, headers=admin.headers), 422)
    assert_error(await client.patch(url, json={"username": "renamed"}, headers=admin.headers), 422)
    assert_error(await client.patch(f"{USERS}/nobody", json={}, headers=admin.headers), 404)
    updates = [p["data"]["changes"] for _, p in await system_events(app, "user.updated")]
    assert updates == [changes, {"email": None}, {"role": "auditor"}]


async def test_disabling_ends_browser_sessions_and_tokens(
    app: Any, client: httpx.AsyncClient, browser: Browser, admin: Caller, tech: Caller
) -> None:
    async with browser() as b:
        await browser_login(b, tech.user.username, tech.password)
        off = await client.patch(
            f"{USERS}/{tech.user.id}", json={"is_active": False}, headers=admin.headers
        )
        assert off.status_code == 200
        assert off.json()["is_active"] is False
        assert_error(await b.get("/api/v1/auth/me"), 401)
    detail = assert_error(await client.get("/api/v1/auth/me", headers=tech.headers), 401)
    assert "disabled" in detail


async def test_last_admin_cannot_be_demoted_or_disabled(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    url = f"{USERS}/{admin.user.id}"
    assert "last active admin" in assert_error(
        await client.patch(url, json={"role": "auditor"}, headers=admin.headers), 409, "conflict"
    )
    assert_error(await client.patch(url, json={"is_active": False}, headers=admin.headers), 409)
    second = await client.post(
        USERS, json={"username": "root2", "role": "admin"}, headers=admin.headers
    )
    assert second.status_code == 201
    # With a second active admin the first may step down.
    demoted = await client.patch(url, json={"role": "technician"}, headers=admin.headers)
    assert demoted.status_code == 200, demoted.text
    # The admin's own token is bounded by the new role at its next use.
    assert_error(await client.get(USERS, headers=admin.headers), 403, "forbidden")


async def test_reset_password(
    app: Any, client: httpx.AsyncClient, browser: Browser, admin: Caller, tech: Caller
) -> None:
    async with browser() as b:
        await browser_login(b, tech.user.username, tech.password)
        reset = await client.post(f"{USERS}/{tech.user.id}/reset-password", headers=admin.headers)
        assert reset.status_code == 200, reset.text
        new = reset.json()["one_time_password"]
        assert new != tech.password
        assert reset.json()["user"]["must_change_password"] is True
        assert_error(await b.get("/api/v1/auth/me"), 401)  # the user's browser is logged out
    old = {"username": tech.user.username, "password": tech.password}
    assert_error(await client.post("/api/v1/auth/login", json=old), 401)
    fresh = await client.post("/api/v1/auth/login", json={**old, "password": new})
    assert fresh.status_code == 200
    assert fresh.json()["must_change_password"] is True
    events = await system_events(app, "user.password_reset")
    assert [p["data"]["user_id"] for _, p in events] == [tech.user.id]
    assert new not in str(await system_events(app))
    assert_error(await client.post(f"{USERS}/nobody/reset-password", headers=admin.headers), 404)


@pytest.mark.parametrize("role", ["technician", "auditor"])
async def test_only_admins_manage_users(
    app: Any, client: httpx.AsyncClient, role: str, admin: Caller
) -> None:
    caller = await make_caller(app, role)
    h = caller.headers
    for method, url, body in [
        ("GET", USERS, None),
        ("POST", USERS, {"username": "sneaky", "role": "admin"}),
        ("GET", f"{USERS}/{caller.user.id}", None),
        ("PATCH", f"{USERS}/{caller.user.id}", {"role": "admin"}),
        ("POST", f"{USERS}/{admin.user.id}/reset-password", None),
    ]:
        response = await client.request(method, url, json=body, headers=h)
        assert "users:admin" in assert_error(response, 403, "forbidden"), (method, url)
    denied = [p["data"] for _, p in await system_events(app, "auth.permission_denied")]
    assert len(denied) == 5
    assert all(d["missing"] == ["users:admin"] for d in denied)
    assert await count_rows(app, User) == 2


async def test_anonymous_is_asked_to_log_in(client: httpx.AsyncClient, admin: Caller) -> None:
    for method, url in [("GET", USERS), ("POST", USERS), ("GET", "/api/v1/tokens")]:
        response = await client.request(method, url, json={})
        assert_error(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Bearer"
