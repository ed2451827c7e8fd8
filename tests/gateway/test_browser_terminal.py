"""The browser terminal in a real headless Chromium, from a normal login.

Each person logs in through the login form (tests/browser_login.py); the terminal page
carries the login's CSRF token, the script asks for a one-time ticket with it and xterm.js
(from npm) relays keys and output. The technician types a command and reads its output; an
invited expert joins the running shell and types too; an admin watches read-only; a session
without the shell right shows the refusal; an anonymous visitor is sent to the login first.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_login import Logins, sign_in
from tests.factories import make_group, make_token, make_user
from tests.gateway.helpers import (
    ScriptedPrompter,
    enrolled_agent,
    recording_text,
    request_session,
    session_state,
    wait_state,
)

ROOT = Path(__file__).resolve().parents[2]
ROWS = "(document.querySelector('.xterm-rows')?.innerText || '')"
STATUS = "(document.getElementById('status').textContent || '')"


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
async def logins(logins: Logins, xterm_installed: None) -> AsyncIterator[Logins]:
    """tests/conftest.py's logins; no page may have logged a script error."""
    yield logins
    assert logins.errors == []


@pytest.fixture
async def desk(app: Any) -> dict[str, Any]:
    """A technician, an expert of the same group, an admin; their passwords for the form."""
    tech, tech_pw = await make_user(app, "technician")
    expert, expert_pw = await make_user(app, "technician")
    admin, admin_pw = await make_user(app, "admin")
    group = await make_group(app, [tech, expert])
    return {
        "tech": (tech, tech_pw),
        "expert": (expert, expert_pw),
        "admin": (admin, admin_pw),
        "token": await make_token(app, tech),
        "group": group,
    }


async def _typed(page: Any, text: str) -> None:
    await page.locator(".xterm-helper-textarea").focus()
    await page.keyboard.type(text)
    await page.keyboard.press("Enter")


async def _shows(page: Any, text: str) -> None:
    await page.wait_for_function(f"{ROWS}.includes({text!r})")


async def test_the_technician_types_and_reads_after_a_normal_login(
    app: Any, gateway: Any, tmp_path: Any, client: httpx.AsyncClient, logins: Logins, desk: Any
) -> None:
    agent = await enrolled_agent(
        app, gateway, tmp_path, desk["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, desk["token"], agent.device_id, ["shell"])
        sid = session["id"]
        await wait_state(client, desk["token"], sid, "approved")
        tech, password = desk["tech"]
        page = await logins.open(tech.username, password, f"/terminal/{sid}")
        await page.wait_for_function(f"{STATUS}.startsWith('connected to')")
        status = await page.locator("#status").inner_text()
        device, ticket = session["device"]["name"], session["ticket"]["external_id"]
        assert status == f"connected to {device} for {ticket} — recorded"
        await _typed(page, "echo sb-browser-$((6*7))")
        await _shows(page, "sb-browser-42")
        assert await session_state(client, desk["token"], sid) == "active"
        assert "sb-browser-42" in await recording_text(app, sid, "sb-browser-42")
        await page.close()
    finally:
        await agent.stop()


async def test_an_expert_joins_and_an_admin_watches(
    app: Any, gateway: Any, tmp_path: Any, client: httpx.AsyncClient, logins: Logins, desk: Any
) -> None:
    agent = await enrolled_agent(
        app, gateway, tmp_path, desk["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, desk["token"], agent.device_id, ["shell"])
        sid = session["id"]
        await wait_state(client, desk["token"], sid, "approved")
        (tech, tech_pw), (expert, expert_pw) = desk["tech"], desk["expert"]
        admin, admin_pw = desk["admin"]
        terminal = await logins.open(tech.username, tech_pw, f"/terminal/{sid}")
        await terminal.wait_for_function(f"{STATUS}.startsWith('connected to')")
        # The technician invites the expert from the session page, as a person does.
        console = await logins.open(tech.username, tech_pw, f"/ui/sessions/{sid}")
        await console.get_by_label("Invite an expert from the device's group").select_option(
            expert.id
        )
        await console.get_by_role("button", name="Invite an expert").click()
        await console.wait_for_selector(f"#invited-experts >> text={expert.username}")

        joined = await logins.open(expert.username, expert_pw, f"/ui/sessions/{sid}")
        async with joined.context.expect_page() as opened:
            await joined.get_by_role("link", name="Join the terminal").click()
        expert_terminal = await opened.value
        await expert_terminal.wait_for_function(f"{STATUS}.startsWith('connected to')")
        watcher = await logins.open(admin.username, admin_pw, f"/terminal/{sid}?mode=watch")
        await watcher.wait_for_function(f"{STATUS}.startsWith('watching')")

        await _typed(expert_terminal, "echo expert-$((20+3))")
        for page in (terminal, expert_terminal, watcher):  # one shell, seen by all three
            await _shows(page, "expert-23")
        await _typed(watcher, "echo watcher-$((1+1))")  # read-only: goes nowhere
        await _typed(terminal, "echo tech-$((5+5))")
        await _shows(watcher, "tech-10")
        for page in (terminal, expert_terminal, watcher):
            assert "watcher-2" not in await page.locator(".xterm-rows").inner_text()
        recorded = await recording_text(app, sid, "tech-10")
        assert "expert-23" in recorded
        assert "watcher-2" not in recorded
    finally:
        await agent.stop()


async def test_a_session_without_the_shell_right_shows_the_refusal(
    app: Any, gateway: Any, tmp_path: Any, client: httpx.AsyncClient, logins: Logins, desk: Any
) -> None:
    """The page keeps the reason on screen (the close that follows the error used to
    overwrite it with "closed")."""
    agent = await enrolled_agent(
        app, gateway, tmp_path, desk["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, desk["token"], agent.device_id, ["files"])
        sid = session["id"]
        await wait_state(client, desk["token"], sid, "approved")
        tech, password = desk["tech"]
        page = await logins.open(tech.username, password, f"/terminal/{sid}")
        await page.wait_for_function(f"{STATUS}.includes('not approved')")
        await page.wait_for_function("document.getElementById('status').dataset.closed")
        assert "not approved for a shell" in await page.locator("#status").inner_text()
        assert await session_state(client, desk["token"], sid) == "approved"
    finally:
        await agent.stop()


async def test_an_anonymous_visitor_is_sent_to_the_login_first(
    app: Any, gateway: Any, tmp_path: Any, client: httpx.AsyncClient, logins: Logins, desk: Any
) -> None:
    agent = await enrolled_agent(
        app, gateway, tmp_path, desk["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, desk["token"], agent.device_id, ["shell"])
        await wait_state(client, desk["token"], session["id"], "approved")
        page = await logins.page(await logins.anonymous())
        await page.goto(f"{logins.base_url}/terminal/{session['id']}")
        await page.wait_for_url("**/ui/login?next=*")
        tech, password = desk["tech"]
        await sign_in(page, tech.username, password)
        await page.wait_for_url(f"**/terminal/{session['id']}")
        await page.wait_for_function(f"{STATUS}.startsWith('connected to')")
        await page.context.close()
    finally:
        await agent.stop()
