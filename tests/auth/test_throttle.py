"""Wrong passwords from many addresses cannot lock anyone out: per (account, source) waits
that grow, a global guard that the account's known addresses pass, an admin's unlock (API
and page), and refusals recorded one per source and minute.

The addresses arrive the way a deployment behind a reverse proxy sees them: from the
trusted proxy, in X-Forwarded-For.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from broker.auth import throttle
from broker.auth.models import LoginThrottle
from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.evidence import refusals
from tests.auth.conftest import Caller, assert_error, system_events
from tests.factories import bearer, make_token, make_user
from tests.ui.browsers import browser, hidden

LOGIN = "/api/v1/auth/login"
PROXY = "10.0.0.1"
HOME = "198.51.100.7"  # where the admin signed in from before
GUARD = 12  # login_guard_failures, lowered from 50 to keep the test short


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"trusted_proxies": [PROXY], "login_guard_failures": GUARD}


@asynccontextmanager
async def proxied(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(PROXY, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as c:
        yield c


async def login(
    proxy: httpx.AsyncClient, username: str, password: str, source: str
) -> httpx.Response:
    # What the client sent in X-Forwarded-For is kept by the proxy, which appends the peer.
    headers = {"X-Forwarded-For": f"192.0.2.250, {source}"}
    proxy.cookies.clear()
    return await proxy.post(
        LOGIN, json={"username": username, "password": password}, headers=headers
    )


async def end_waits(app: Any) -> None:
    async with app.state.sessionmaker() as db:
        past = utcnow() - timedelta(seconds=1)
        await db.execute(update(LoginThrottle).values(locked_until=past))
        await db.commit()


async def test_many_addresses_cannot_lock_the_admin_out(app: Any, admin: Caller) -> None:
    async with proxied(app) as proxy:
        assert (await login(proxy, "root", admin.password, HOME)).status_code == 200
        statuses = []
        for n in range(39):
            response = await login(proxy, "root", "not-the-password", f"203.0.113.{n + 1}")
            statuses.append(response.status_code)
        # The guard lets GUARD guesses through from all addresses together (39 addresses:
        # ten wrong passwords used to lock the account), then addresses new to it wait.
        assert statuses == [401] * GUARD + [429] * (39 - GUARD)
        # The real admin, on an address that signed in before, still gets in ...
        home = await login(proxy, "root", admin.password, HOME)
        assert home.status_code == 200, home.text
        # ... while a new address waits even with the right password.
        stranger = await login(proxy, "root", admin.password, "203.0.113.200")
        assert_error(stranger, 429, "rate_limited")
        assert int(stranger.headers["retry-after"]) >= 1
        # Claiming the admin's address does not help: the proxy appends the real peer, and
        # a client that is not a trusted proxy is not believed at all.
        forged = {"X-Forwarded-For": f"{HOME}, 203.0.113.66"}
        body = {"username": "root", "password": admin.password}
        assert (await proxy.post(LOGIN, json=body, headers=forged)).status_code == 429
    direct = httpx.ASGITransport(app=app, client=("203.0.113.67", 40000))
    async with httpx.AsyncClient(transport=direct, base_url="http://broker.test") as outsider:
        claimed = {"X-Forwarded-For": HOME}
        assert (await outsider.post(LOGIN, json=body, headers=claimed)).status_code == 429
    failed = await system_events(app, "auth.login_failed")
    assert len(failed) == GUARD
    scopes = {p["data"]["scope"] for t, p in await system_events(app, "auth.lockout")}
    assert scopes == {"account"}


async def test_a_source_waits_longer_after_each_wrong_password(app: Any, admin: Caller) -> None:
    waits = []
    async with proxied(app) as proxy:
        for _ in range(throttle.PAIR_FREE):
            assert (await login(proxy, "root", "guess-guess", "203.0.113.5")).status_code == 401
        for _ in range(2):
            refused = await login(proxy, "root", admin.password, "203.0.113.5")
            assert_error(refused, 429, "rate_limited")
            waits.append(int(refused.headers["retry-after"]))
            await end_waits(app)
            assert (await login(proxy, "root", "guess-guess", "203.0.113.5")).status_code == 401
        # The same account from another address is not slowed.
        assert (await login(proxy, "root", admin.password, "203.0.113.6")).status_code == 200
    assert waits[0] <= throttle.PAIR_BACKOFF.total_seconds()
    assert waits[0] < waits[1]


async def test_an_admin_unlocks_an_account(app: Any, admin: Caller) -> None:
    tech, tech_pw = await make_user(app, "technician")
    async with proxied(app) as proxy:
        for _ in range(throttle.PAIR_FREE):
            await login(proxy, tech.username, "guess-guess", "203.0.113.5")
        assert (await login(proxy, tech.username, tech_pw, "203.0.113.5")).status_code == 429
        unlocked = await proxy.post(f"/api/v1/users/{tech.id}/unlock", headers=admin.headers)
        assert unlocked.status_code == 200, unlocked.text
        assert unlocked.json()["cleared"] == 2  # the pair and the account's guard
        assert unlocked.json()["user"]["username"] == tech.username
        assert (await login(proxy, tech.username, tech_pw, "203.0.113.5")).status_code == 200
    events = [p for t, p in await system_events(app, "auth.unlocked")]
    assert [(p["data"]["username"], p["actor"]["role"]) for p in events] == [
        (tech.username, "admin")
    ]
    # Not an admin: refused, and nothing is cleared.
    other = bearer(await make_token(app, tech))
    async with proxied(app) as proxy:
        assert_error(await proxy.post(f"/api/v1/users/{tech.id}/unlock", headers=other), 403)
        assert_error(
            await proxy.post("/api/v1/users/no-such-user/unlock", headers=admin.headers), 404
        )


async def test_the_admin_page_shows_and_unlocks_a_waiting_account(app: Any, admin: Caller) -> None:
    tech, tech_pw = await make_user(app, "technician")
    async with proxied(app) as proxy:
        for _ in range(throttle.PAIR_FREE):
            await login(proxy, tech.username, "guess-guess", "203.0.113.5")
    page = await browser(app, admin.user)
    users = await page.get("/ui/admin/users")
    assert users.status_code == 200
    assert f'id="throttled-{tech.username}"' in users.text
    done = await page.post(
        f"/ui/admin/users/{tech.id}/unlock", {"csrf_token": hidden(users.text, "csrf_token")}
    )
    assert done.status_code == 200, done.text
    assert f"Sign-in of {tech.username} unlocked" in done.text
    assert f'id="throttled-{tech.username}"' not in done.text
    async with proxied(app) as proxy:
        assert (await login(proxy, tech.username, tech_pw, "203.0.113.5")).status_code == 200
    assert [t for t, _ in await system_events(app, "auth.unlocked")] == ["auth.unlocked"]


async def test_refusals_are_recorded_once_per_source_and_minute(app: Any, admin: Caller) -> None:
    async with proxied(app) as proxy:
        for _ in range(throttle.PAIR_FREE):
            await login(proxy, "root", "guess-guess", "203.0.113.5")
        before = len(await system_events(app))
        for _ in range(30):
            assert (await login(proxy, "root", admin.password, "203.0.113.5")).status_code == 429
    # Not one record per refusal: at most a minute that ended during the loop is sealed.
    assert len(await system_events(app)) - before <= 1
    async with transaction(app.state.sessionmaker) as db:
        assert await refusals.record_finished(db, utcnow() + timedelta(minutes=2)) >= 1
    records = [p for t, p in await system_events(app, "security.refused")]
    assert 1 <= len(records) <= 2  # one per minute (the loop may straddle a minute)
    assert sum(p["data"]["count"] for p in records) == 30
    assert {(p["data"]["kind"], p["data"]["source"]) for p in records} == {("login", "203.0.113.5")}
    assert {p["actor"]["ip"] for p in records} == {"203.0.113.5"}
