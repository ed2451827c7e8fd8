"""Login, logout, me and password change through the API (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
from sqlalchemy import update

from broker.auth import throttle, totp
from broker.auth.models import User, WebSession
from broker.auth.principal import Principal
from broker.auth.service import LOGIN_FAILED
from tests.auth.conftest import (
    Browser,
    Caller,
    assert_error,
    browser_login,
    count_rows,
    system_events,
)
from tests.factories import make_user

LOGIN = "/api/v1/auth/login"


async def test_login_sets_cookie_and_returns_user_and_csrf(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    response = await client.post(LOGIN, json={"username": "root", "password": admin.password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["username"] == "root"
    assert body["user"]["role"] == "admin"
    assert body["must_change_password"] is False
    assert len(body["csrf_token"]) >= 32
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("sb_session=")
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
    assert admin.password not in response.text
    assert "argon2" not in response.text
    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["kind"] == "user"
    assert me.json()["csrf_token"] == body["csrf_token"]
    assert await count_rows(app, WebSession) == 1
    logins = await system_events(app, "auth.login")
    assert [(t, p["data"]["username"]) for t, p in logins] == [("auth.login", "root")]


async def test_wrong_unknown_and_disabled_look_the_same(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    user, password = await make_user(app, "technician", username="gone")
    async with app.state.sessionmaker() as db:
        await db.execute(update(User).where(User.id == user.id).values(is_active=False))
        await db.commit()
    attempts = [
        {"username": "root", "password": "not-the-password"},
        {"username": "nobody", "password": "whatever-it-is"},
        {"username": "gone", "password": password},  # right password, disabled account
    ]
    bodies = []
    for body in attempts:
        response = await client.post(LOGIN, json=body)
        assert_error(response, 401, "not_authenticated")
        assert "set-cookie" not in response.headers
        bodies.append(response.json())
    assert bodies == [{"error": "not_authenticated", "detail": LOGIN_FAILED}] * 3
    failed = [p["data"] for t, p in await system_events(app, "auth.login_failed")]
    assert [(d["username"], d["why"]) for d in failed] == [
        ("root", "wrong password"),
        ("nobody", "unknown user"),
        ("gone", "account disabled"),
    ]
    assert await count_rows(app, WebSession) == 0


async def test_a_waiting_source_is_refused_the_right_password_and_it_is_audited(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    for _ in range(throttle.PAIR_FREE):
        response = await client.post(LOGIN, json={"username": "root", "password": "guess-guess"})
        assert response.status_code == 401
    refused = await client.post(LOGIN, json={"username": "root", "password": admin.password})
    detail = assert_error(refused, 429, "rate_limited")
    assert "too many failed logins" in detail
    assert 1 <= int(refused.headers["retry-after"]) <= throttle.PAIR_BACKOFF.total_seconds()
    assert "set-cookie" not in refused.headers
    lockouts = [p["data"] for t, p in await system_events(app, "auth.lockout")]
    assert len(lockouts) == 1
    assert lockouts[0]["scope"] == "account_source"
    assert lockouts[0]["username"] == "root"
    assert lockouts[0]["failures"] == throttle.PAIR_FREE
    failed = await system_events(app, "auth.login_failed")
    assert len(failed) == throttle.PAIR_FREE  # the refusal is tallied, not one record each
    # Another account from the same client is not slowed by this account's wait.
    other, other_pw = await make_user(app, "auditor")
    ok = await client.post(LOGIN, json={"username": other.username, "password": other_pw})
    assert ok.status_code == 200, ok.text


async def test_client_lockout_spans_accounts(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    for i in range(throttle.CLIENT_FREE):
        response = await client.post(LOGIN, json={"username": f"guess{i}", "password": "x" * 12})
        assert response.status_code == 401
    refused = await client.post(LOGIN, json={"username": "root", "password": admin.password})
    assert_error(refused, 429, "rate_limited")
    scopes = [p["data"]["scope"] for t, p in await system_events(app, "auth.lockout")]
    assert scopes == ["client"]


async def test_a_successful_login_clears_the_pair_counter(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    for _ in range(throttle.PAIR_FREE - 1):
        await client.post(LOGIN, json={"username": "root", "password": "guess-guess"})
    assert (
        await client.post(LOGIN, json={"username": "root", "password": admin.password})
    ).is_success
    await client.post(LOGIN, json={"username": "root", "password": "guess-guess"})
    again = await client.post(LOGIN, json={"username": "root", "password": admin.password})
    assert again.status_code == 200, again.text


async def test_logout_ends_the_browser_session(app: Any, browser: Browser, admin: Caller) -> None:
    async with browser() as b:
        csrf = await browser_login(b, "root", admin.password)
        cookie = b.cookies["sb_session"]
        response = await b.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
        assert response.status_code == 204
        assert "sb_session" not in b.cookies
        assert_error(await b.get("/api/v1/auth/me"), 401, "not_authenticated")
    async with browser() as replay:  # the old cookie value is dead on the server too
        replay.cookies.set("sb_session", cookie)
        assert_error(await replay.get("/api/v1/auth/me"), 401)
    assert await count_rows(app, WebSession) == 0
    assert [t for t, _ in await system_events(app, "auth.logout")] == ["auth.logout"]


async def test_logout_is_for_browsers_not_tokens(client: httpx.AsyncClient, admin: Caller) -> None:
    response = await client.post("/api/v1/auth/logout", headers=admin.headers)
    assert "revoke" in assert_error(response, 422)
    assert_error(await client.post("/api/v1/auth/logout"), 401)


async def test_me_for_a_token_and_anonymous(client: httpx.AsyncClient, tech: Caller) -> None:
    response = await client.get("/api/v1/auth/me", headers=tech.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "token"
    assert body["role"] == "technician"
    assert body["user"]["id"] == tech.user.id
    assert body["token_id"]
    assert body["csrf_token"] is None
    assert "sessions:write" in body["scopes"]
    assert "users:admin" not in body["scopes"]
    assert_error(await client.get("/api/v1/auth/me"), 401, "not_authenticated")


async def test_password_change_rules(app: Any, browser: Browser, tech: Caller) -> None:
    name = tech.user.username
    async with browser() as other:  # a second browser of the same user
        await browser_login(other, name, tech.password)
        async with browser() as b:
            csrf = await browser_login(b, name, tech.password)
            h = {"X-CSRF-Token": csrf}
            url = "/api/v1/auth/password"
            wrong = await b.post(
                url, json={"current_password": "nope", "new_password": "n" * 12}, headers=h
            )
            assert "current password is wrong" in assert_error(wrong, 401)
            short = {"current_password": tech.password, "new_password": "short"}
            assert "new_password" in assert_error(await b.post(url, json=short, headers=h), 422)
            same = {"current_password": tech.password, "new_password": tech.password}
            assert "differ" in assert_error(await b.post(url, json=same, headers=h), 422)
            good = {"current_password": tech.password, "new_password": "a-much-better-one"}
            changed = await b.post(url, json=good, headers=h)
            assert changed.status_code == 200, changed.text
            assert changed.json()["must_change_password"] is False
            assert (await b.get("/api/v1/auth/me")).status_code == 200  # this browser stays
        assert_error(await other.get("/api/v1/auth/me"), 401)  # the other one is logged out
    async with browser() as b:
        old = await b.post(LOGIN, json={"username": name, "password": tech.password})
        assert_error(old, 401)
        assert (
            await b.post(LOGIN, json={"username": name, "password": "a-much-better-one"})
        ).is_success
    types = [t for t, _ in await system_events(app, "auth.password_change")]
    assert types == ["auth.password_change_failed", "auth.password_changed"]


async def test_a_token_cannot_change_a_password(client: httpx.AsyncClient, tech: Caller) -> None:
    body = {"current_password": tech.password, "new_password": "another-password"}
    response = await client.post("/api/v1/auth/password", json=body, headers=tech.headers)
    assert_error(response, 403, "forbidden")


async def test_one_time_password_allows_only_me_password_logout(
    app: Any, client: httpx.AsyncClient, browser: Browser, admin: Caller
) -> None:
    created = await client.post(
        "/api/v1/users", json={"username": "newbie", "role": "technician"}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    otp = created.json()["one_time_password"]
    async with browser() as b:
        login = await b.post(LOGIN, json={"username": "newbie", "password": otp})
        assert login.status_code == 200
        assert login.json()["must_change_password"] is True
        h = {"X-CSRF-Token": login.json()["csrf_token"]}
        me = await b.get("/api/v1/auth/me")
        assert me.status_code == 200
        assert me.json()["must_change_password"] is True
        for method, url in [
            ("GET", "/api/v1/sessions"),
            ("GET", "/api/v1/devices"),
            ("GET", "/api/v1/tickets"),
            ("POST", "/api/v1/tickets"),
        ]:
            refused = await b.request(method, url, headers=h, json={})
            assert "one-time password" in assert_error(refused, 403, "forbidden"), url
        change = {"current_password": otp, "new_password": "my-own-password-now"}
        assert (await b.post("/api/v1/auth/password", json=change, headers=h)).status_code == 200
        assert (await b.get("/api/v1/sessions")).status_code == 200
        assert (await b.post("/api/v1/auth/logout", headers=h)).status_code == 204


async def test_totp_account_needs_its_code(
    app: Any, client: httpx.AsyncClient, tech: Caller
) -> None:
    principal = Principal(
        kind="user", role="technician", name="t", scopes=frozenset(), user_id=tech.user.id
    )
    async with app.state.sessionmaker() as db:
        secret, _ = await totp.begin_enrollment(db, principal)
        key = base64.b32decode(secret + "=" * (-len(secret) % 8))
        now = time.time()
        await totp.confirm_enrollment(db, principal, totp.totp(key, now - totp.STEP_SECONDS))
        await db.commit()
    creds = {"username": tech.user.username, "password": tech.password}
    missing = await client.post(LOGIN, json=creds)
    assert "totp_code" in assert_error(missing, 401)
    wrong_code = "000000" if totp.totp(key, now) != "000000" else "111111"
    assert_error(await client.post(LOGIN, json={**creds, "totp_code": wrong_code}), 401)
    ok = await client.post(LOGIN, json={**creds, "totp_code": totp.totp(key, now)})
    assert ok.status_code == 200, ok.text
    whys = [p["data"]["why"] for _, p in await system_events(app, "auth.login_failed")]
    assert whys == ["second factor: wrong or reused code"]
