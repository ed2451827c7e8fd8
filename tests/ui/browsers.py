"""HTTP clients for the page tests that log in through the login form (as a browser does),
one per user; they then carry the cookie and CSRF token the broker itself handed out."""

from __future__ import annotations

import re
from typing import Any

import httpx

from broker.auth.models import User
from tests.browser_login import form_login
from tests.factories import PASSWORDS

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


def client_for(app: Any, forged: dict[str, str] | None = None) -> httpx.AsyncClient:
    """A browser-like client; ``forged`` cookies only for tests of what the broker refuses."""
    transport = httpx.ASGITransport(app=app, client=(IP, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://broker.test", cookies=forged)


async def browser(app: Any, user: User | None) -> Browser:
    """A client logged in as ``user`` (made by ``tests.factories.make_user``) through the form."""
    client = client_for(app)
    if user is None:
        return Browser(client, None)
    return Browser(client, await form_login(client, user.username, PASSWORDS[user.id]))


def hidden(html: str, name: str) -> str:
    """The value of the hidden form field ``name`` on a page."""
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)
