"""Fixtures for the auth tests: callers with bearer tokens, logged-in browsers, counters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from broker.auth.models import ApiToken, User, WebSession
from tests.factories import audit_events, bearer, make_token, make_user


@dataclass
class Caller:
    user: User
    password: str
    headers: dict[str, str]


async def caller(app: Any, role: str, username: str | None = None) -> Caller:
    user, password = await make_user(app, role, username=username)
    return Caller(user, password, bearer(await make_token(app, user)))


@pytest.fixture
async def admin(app: Any) -> Caller:
    return await caller(app, "admin", "root")


@pytest.fixture
async def tech(app: Any) -> Caller:
    return await caller(app, "technician")


@pytest.fixture
async def auditor(app: Any) -> Caller:
    return await caller(app, "auditor")


Browser = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def browser(app: Any) -> Browser:
    """A fresh client with its own cookie jar (one per simulated browser)."""

    @asynccontextmanager
    async def _open() -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as c:
            yield c

    return _open


async def browser_login(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Log in over the API; returns the CSRF token."""
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["csrf_token"]
    return token


async def count_rows(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def system_events(app: Any, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    return [(t, p) for t, p in await audit_events(app, "_system") if t.startswith(prefix)]


async def snapshot(app: Any) -> tuple[int, int, int, int]:
    """Users, tokens, browser sessions and audit events: to prove nothing was written."""
    return (
        await count_rows(app, User),
        await count_rows(app, ApiToken),
        await count_rows(app, WebSession),
        len(await audit_events(app, "_system")),
    )


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["detail"]
    if code is not None:
        assert body["error"] == code, body
    detail: str = body["detail"]
    return detail
