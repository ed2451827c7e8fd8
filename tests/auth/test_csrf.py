"""Cookie-authenticated writes need the CSRF token: every unsafe auth, users and tokens route.

A missing or wrong token is refused with 403 before the route runs (nothing changes) and the
refusal is audited; the right token (header, or form field) is admitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from broker.auth.models import User
from broker.auth.repository import ApiTokenRepository, UserRepository
from tests.auth.conftest import (
    Browser,
    Caller,
    assert_error,
    browser_login,
    count_rows,
    system_events,
)
from tests.factories import make_token, make_user


@dataclass
class Target:
    method: str
    url: str
    body: dict[str, Any] | None
    ok: int


async def _targets(app: Any, admin: Caller) -> dict[str, Target]:
    victim, _ = await make_user(app, "technician", username="victim")
    await make_token(app, victim)
    async with app.state.sessionmaker() as db:
        token = (await ApiTokenRepository(db).list())[-1]
    return {
        "logout": Target("POST", "/api/v1/auth/logout", None, 204),
        "password": Target(
            "POST",
            "/api/v1/auth/password",
            {"current_password": admin.password, "new_password": "fresh-password-1"},
            200,
        ),
        "create_user": Target(
            "POST", "/api/v1/users", {"username": "mallory", "role": "admin"}, 201
        ),
        "update_user": Target("PATCH", f"/api/v1/users/{victim.id}", {"role": "admin"}, 200),
        "reset_password": Target("POST", f"/api/v1/users/{victim.id}/reset-password", None, 200),
        "create_token": Target(
            "POST",
            "/api/v1/tokens",
            {"name": "evil", "owner_id": victim.id, "scopes": ["sessions:read"]},
            201,
        ),
        "revoke_token": Target("DELETE", f"/api/v1/tokens/{token.id}", None, 200),
    }


async def _state(app: Any) -> tuple[Any, ...]:
    async with app.state.sessionmaker() as db:
        users = [
            (u.username, u.role, u.password_hash, u.must_change_password)
            for u in await UserRepository(db).list()
        ]
        tokens = [(t.id, t.revoked_at) for t in await ApiTokenRepository(db).list()]
    return tuple(users), tuple(tokens)


ROUTES = [
    "logout",
    "password",
    "create_user",
    "update_user",
    "reset_password",
    "create_token",
    "revoke_token",
]


@pytest.mark.parametrize("route", ROUTES)
async def test_cookie_write_without_or_with_wrong_csrf_is_refused(
    app: Any, browser: Browser, admin: Caller, route: str
) -> None:
    target = (await _targets(app, admin))[route]
    async with browser() as b:
        csrf = await browser_login(b, "root", admin.password)
        before = await _state(app)
        for headers in ({}, {"X-CSRF-Token": "not-the-token"}, {"X-CSRF-Token": ""}):
            response = await b.request(target.method, target.url, json=target.body, headers=headers)
            assert "CSRF" in assert_error(response, 403, "forbidden")
        assert await _state(app) == before
        assert (await b.get("/api/v1/auth/me")).status_code == 200  # still logged in
        rejected = [p["data"] for _, p in await system_events(app, "auth.csrf_rejected")]
        assert [(d["method"], d["path"]) for d in rejected] == [(target.method, target.url)] * 3
        response = await b.request(
            target.method, target.url, json=target.body, headers={"X-CSRF-Token": csrf}
        )
        assert response.status_code == target.ok, response.text
    assert await _state(app) != before or route == "logout"


async def test_csrf_token_of_another_session_is_refused(
    app: Any, browser: Browser, admin: Caller
) -> None:
    async with browser() as first, browser() as second:
        csrf_first = await browser_login(first, "root", admin.password)
        await browser_login(second, "root", admin.password)
        body = {"username": "mallory", "role": "admin"}
        response = await second.post(
            "/api/v1/users", json=body, headers={"X-CSRF-Token": csrf_first}
        )
        assert_error(response, 403, "forbidden")
    assert await count_rows(app, User) == 1  # only the admin; no mallory


async def test_csrf_token_as_form_field(app: Any, browser: Browser, admin: Caller) -> None:
    async with browser() as b:
        csrf = await browser_login(b, "root", admin.password)
        wrong = await b.post("/api/v1/auth/logout", data={"csrf_token": "nope"})
        assert_error(wrong, 403)
        right = await b.post("/api/v1/auth/logout", data={"csrf_token": csrf})
        assert right.status_code == 204


async def test_safe_methods_and_bearer_need_no_csrf(
    client: httpx.AsyncClient, browser: Browser, admin: Caller
) -> None:
    async with browser() as b:
        await browser_login(b, "root", admin.password)
        assert (await b.get("/api/v1/users")).status_code == 200
    body = {"username": "helper", "role": "auditor"}
    assert (await client.post("/api/v1/users", json=body, headers=admin.headers)).status_code == 201


async def test_login_itself_needs_no_csrf_but_only_json(
    client: httpx.AsyncClient, admin: Caller
) -> None:
    # A cross-site HTML form cannot send JSON: a form-encoded login is not accepted.
    form = await client.post(
        "/api/v1/auth/login", data={"username": "root", "password": admin.password}
    )
    assert_error(form, 422, "invalid_request")
    plain = await client.post(
        "/api/v1/auth/login",
        content=b'{"username": "root", "password": "x"}',
        headers={"content-type": "text/plain"},
    )
    assert_error(plain, 422, "invalid_request")
