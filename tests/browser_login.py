"""Logging in as a person does: through the real login form, never a cookie set by hand.

- :func:`sign_in` fills the form a Chromium page shows (and, for an account with a one-time
  password, the password change the broker asks for next);
- :class:`Logins` logs each user in once per test and hands out that browser context again,
  so every page of a test is opened with the cookies the broker itself set;
- :func:`form_login` does the same for an HTTP client (pages tested without a browser).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

LOGIN_PATH = "/ui/login"
# Pages wait this long for what they expect (other test runs share the machine's CPUs).
WAIT_MS = 60_000


async def sign_in(
    page: Any, username: str, password: str, *, new_password: str | None = None
) -> None:
    """On the login page: fill it in, send it, and wait until the broker let us in.

    With ``new_password`` the account is on a one-time password: the broker sends the
    browser to "Change your password", which is filled in too (the password is then
    ``new_password``)."""
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: LOGIN_PATH not in url)
    if "/ui/password" in page.url:
        if new_password is None:
            raise AssertionError(f"{username} must change a one-time password first")
        await page.get_by_label("Current password").fill(password)
        await page.get_by_label("New password", exact=True).fill(new_password)
        await page.get_by_label("New password again").fill(new_password)
        await page.get_by_role("button", name="Change password").click()
        await page.wait_for_url(lambda url: "/ui/password" not in url)


class Logins:
    """One logged-in browser context per user, reused for every page the test opens."""

    def __init__(self, browser: Any, base_url: str, **context_options: Any) -> None:
        self.browser, self.base_url = browser, base_url
        self.options = {"viewport": {"width": 1100, "height": 800}, **context_options}
        self._contexts: dict[str, Any] = {}
        self.errors: list[str] = []

    async def anonymous(self, **options: Any) -> Any:
        """A fresh context with no login (the end user; a visitor)."""
        context = await self.browser.new_context(**{**self.options, **options})
        context.set_default_timeout(WAIT_MS)
        return context

    async def context(self, username: str, password: str) -> Any:
        """The context of ``username``, logged in through the form the first time."""
        if username not in self._contexts:
            context = await self.anonymous()
            page = await self.page(context)
            await page.goto(self.base_url + LOGIN_PATH)
            await sign_in(page, username, password)
            await page.close()
            self._contexts[username] = context
        return self._contexts[username]

    async def page(self, context: Any) -> Any:
        """A new page in ``context`` whose script errors fail the test (see ``errors``)."""
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    async def open(self, username: str, password: str, path: str) -> Any:
        """A new page of ``username``'s context at ``path``."""
        page = await self.page(await self.context(username, password))
        await page.goto(self.base_url + path)
        return page

    async def close(self) -> None:
        for context in self._contexts.values():
            await context.close()
        self._contexts.clear()


async def form_login(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Log ``client`` in through the login form as a browser does; returns the CSRF token
    the next page carries (logged-in forms send it back)."""
    form = await client.get(LOGIN_PATH)
    match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert match, "the login page has no CSRF field"
    sent = await client.post(
        LOGIN_PATH,
        data={"username": username, "password": password, "csrf_token": match[1]},
    )
    assert sent.status_code == 303, sent.text
    home = await client.get(sent.headers["location"])
    found = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
    assert found, f"no CSRF token on {sent.headers['location']}"
    return found[1]
