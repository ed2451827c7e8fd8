"""The browser terminal in a real headless Chromium: the technician's page (cookie session,
CSRF, one-time ticket, xterm.js from npm) types a command and reads its output from the page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.auth.service import start_web_session
from tests.gateway.helpers import (
    ScriptedPrompter,
    enrolled_agent,
    recording_text,
    request_session,
    session_state,
    wait_state,
)

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def xterm_installed() -> None:
    """xterm.js comes from npm (package.json at the repo root), installed once if missing."""
    if (ROOT / "node_modules/@xterm/xterm/lib/xterm.js").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node_modules/@xterm/xterm is missing and npm is not installed")
    subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=ROOT, check=True)


@pytest.fixture
async def browser(tmp_path: Path, xterm_installed: None) -> Any:
    if not Path(CHROMIUM).exists() and not IN_CI:
        pytest.skip(f"{CHROMIUM} is not installed (the browser test needs a real Chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data dir per test
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
        )
        try:
            yield context
        finally:
            await context.close()


async def terminal_page(app: Any, people: Any, browser: Any, live_url: str, sid: str) -> Any:
    """The technician's browser, logged in by cookie, on the session's terminal page."""
    async with app.state.sessionmaker() as db:
        cookie, csrf = await start_web_session(db, people["tech"], "127.0.0.1")
        await db.commit()
    await browser.add_cookies(
        [
            {"name": "sb_session", "value": cookie, "url": live_url},
            {"name": "sb_csrf", "value": csrf, "url": live_url},
        ]
    )
    page = await browser.new_page()
    await page.goto(f"{live_url}/terminal/{sid}")
    return page


async def test_browser_terminal_types_and_reads(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    browser: Any,
):
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        sid = session["id"]
        await wait_state(client, people["tech_token"], sid, "approved")
        page = await terminal_page(app, people, browser, live_url, sid)
        await page.wait_for_function(
            "document.getElementById('status').textContent === 'connected'", timeout=15000
        )
        await page.locator(".xterm-helper-textarea").focus()
        await page.keyboard.type("echo sb-browser-$((6*7))")
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "(document.querySelector('.xterm-rows')?.innerText || '').includes('sb-browser-42')",
            timeout=15000,
        )
        rows = await page.locator(".xterm-rows").inner_text()
        assert "sb-browser-42" in rows
        assert await session_state(client, people["tech_token"], sid) == "active"
        assert "sb-browser-42" in await recording_text(app, sid, "sb-browser-42")
        await page.close()
    finally:
        await agent.stop()


async def test_browser_terminal_shows_a_refusal(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    browser: Any,
):
    """A view-only session's terminal is refused: the page keeps the reason on screen (the
    close that follows the error used to overwrite it with "closed")."""
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["files"])
        sid = session["id"]
        await wait_state(client, people["tech_token"], sid, "approved")
        page = await terminal_page(app, people, browser, live_url, sid)
        await page.wait_for_function(
            "(document.getElementById('status').textContent || '').includes('not approved')",
            timeout=15000,
        )
        await page.wait_for_timeout(300)  # the close arrives after the error: it must not win
        status = await page.locator("#status").inner_text()
        assert "not approved for a shell" in status
        assert await session_state(client, people["tech_token"], sid) == "approved"
        await page.close()
    finally:
        await agent.stop()
