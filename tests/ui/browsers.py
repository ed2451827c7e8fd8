"""Cookie-authenticated HTTP clients for the page tests (as a browser is), one per role."""

from __future__ import annotations

import re
from typing import Any

import httpx

from broker.auth.deps import SESSION_COOKIE
from broker.auth.models import User
from broker.auth.service import start_web_session

IP = "198.51.100.10"


class Browser:
    """A client with the session cookie of one user (or none) and their CSRF token."""

    def __init__(self, client: httpx.AsyncClient, csrf: str | None) -> None:
        self.client, self.csrf = client, csrf

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def post(
        self, path: str, data: dict[str, Any] | None = None, csrf: str | bool = True, **kw: Any
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf is True and self.csrf:
            form["csrf_token"] = self.csrf
        elif isinstance(csrf, str):
            form["csrf_token"] = csrf
        return await self.client.post(path, data=form, **kw)


def client_for(app: Any, cookies: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(IP, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://broker.test", cookies=cookies)


async def browser(app: Any, user: User | None) -> Browser:
    if user is None:
        return Browser(client_for(app), None)
    async with app.state.sessionmaker() as db:
        secret, csrf = await start_web_session(db, user, IP)
        await db.commit()
    return Browser(client_for(app, {SESSION_COOKIE: secret}), csrf)


def hidden(html: str, name: str) -> str:
    """The value of the hidden form field ``name`` on a page."""
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)
