"""Four people's journeys through the product as it is started and used, in real Chromium.

The broker is a ``supportbroker serve`` process (ports and data folder from the documented
settings, see tests/e2e/processes.py) and the device runs a real ``supportbroker-agent`` in
a terminal of its own. Data is made only through the product's command line and API. Every
step saves a screenshot to tests/artifacts/journey-<person>-NN-<step>.png (git-ignored).

- technician: the ticket's deep link, first login (one-time password, then their own), the
  request, the wait, the user's yes at the agent's prompt, the terminal in the browser
  (``echo hello``), the end;
- end user: the code, the consent page (what, why, what is recorded), approve, and the
  agent's prompt closes saying so; in a second run the technician is connected and the end
  user revokes from the page, and the technician's command line says who ended it;
- auditor: search, timeline, replay (with a reason), verify the log, export the evidence
  bundle, and the command line verifies the downloaded bundle with the published key;
- admin: first login with the printed one-time password, own password, a user, a group
  with that user, an enrollment token.
SQLite only (the data paths run on PostgreSQL elsewhere).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shlex
import subprocess
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_login import Logins, sign_in
from tests.e2e.processes import (
    BIN,
    Agent,
    Served,
    api,
    clean_env,
    created_password,
    enrolled_agent,
    serve,
    wait_state,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ROWS = "(document.querySelector('.xterm-rows')?.innerText || '')"
STATUS = "(document.getElementById('status').textContent || '')"
NEW_PASSWORD = "a-long-own-password-42"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    found = serve(tmp_path_factory.mktemp("served"))
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="module")
def desk(served: Served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What an operator sets up with the command line: a group, a technician serving it, an
    auditor, the technician's API token, and a device enrolled with the agent."""
    served.cli("group", "add", "front-office", "--description", "Reception desks")
    tom = served.cli("user", "create", "tom", "--role", "technician", "--display-name", "Tom T")
    served.cli("group", "add-member", "front-office", "tom")
    alice = served.cli("user", "create", "alice", "--role", "auditor", "--display-name", "Alice A")
    issued = served.cli(
        "token", "create", "--name", "tom-cli", "--user", "tom",
        "--scope", "sessions:read", "--scope", "sessions:write",
    ).stdout  # fmt: skip
    token = re.search(r"secret \(shown only now\): (\S+)", issued)
    assert token, issued
    agent = enrolled_agent(served, tmp_path_factory.mktemp("device"), "front-office")
    devices = json.loads(served.cli("device", "list", "--json").stdout)["items"]
    return {
        "tom": created_password(tom.stdout),
        "alice": created_password(alice.stdout),
        "token": token.group(1),
        "agent": agent,
        "device": devices[0],
    }


@pytest.fixture
async def logins(served: Served, chromium: Any) -> AsyncIterator[Logins]:
    """tests/conftest.py's Chromium on the served broker; no page may log a script error."""
    found = Logins(chromium, served.url, accept_downloads=True)
    try:
        yield found
    finally:
        await found.close()
    assert found.errors == []


def test_serve_prints_a_login_address_that_works(served: Served) -> None:
    """``make run`` runs ``supportbroker serve``: what it prints must take people in."""
    assert served.login_url == f"{served.url}/login"
    page = httpx.get(served.login_url, follow_redirects=True, timeout=30)
    assert page.status_code == 200
    assert "<h1>Sign in</h1>" in page.text
    printed = served.out.text
    assert f"data:     {served.data_dir.resolve()}" in printed
    assert f"agents:   127.0.0.1:{served.gateway_port} (SSH gateway)" in printed
    assert (served.data_dir / "supportbroker.db").exists()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for setting in ("SUPPORTBROKER_PORT", "SUPPORTBROKER_GATEWAY_PORT", "SUPPORTBROKER_DATA_DIR"):
        assert setting in readme, f"the README does not say how to set {setting}"


class Shots:
    """One screenshot per step, numbered, per person."""

    def __init__(self, person: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.person, self.step = person, 0

    async def __call__(self, page: Any, name: str) -> None:
        self.step += 1
        path = ARTIFACTS / f"journey-{self.person}-{self.step:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)


async def _prompt(agent: Agent, pattern: str, after: int) -> str:
    """What the person at the device reads, once ``pattern`` shows in the agent's terminal."""
    found = await asyncio.to_thread(agent.out.wait_for, pattern, after=after)
    return found.group(0)


def _request(served: Served, token: str, device: dict[str, Any], ticket: str, subject: str) -> Any:
    with api(served, token) as client:
        created = client.post(
            "/api/v1/sessions",
            json={
                "ticket": {"system": "helpdesk", "external_id": ticket, "subject": subject},
                "device_id": device["id"],
                "reason": f"{subject}: needs a look at the logs",
                "capabilities": ["shell"],
                "duration_minutes": 30,
            },
        )
    assert created.status_code == 201, created.text
    return created.json()


async def test_technician_journey(served: Served, desk: dict[str, Any], logins: Logins) -> None:
    shot, agent = Shots("technician"), desk["agent"]
    page = await logins.page(await logins.anonymous())
    # 1. In ticket HD-4711 the technician clicks the broker's link; first sign-in.
    await page.goto(f"{served.url}/t/helpdesk/HD-4711/connect")
    await page.wait_for_url("**/ui/login?next=*")
    await shot(page, "login")
    await page.get_by_label("Username").fill("tom")
    await page.get_by_label("Password").fill(desk["tom"])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/ui/password?next=*")
    await shot(page, "own-password")
    await page.get_by_label("Current password").fill(desk["tom"])
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("New password again").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    # 2. The request form, with the ticket filled in from the link.
    await page.wait_for_url("**/ui/new?system=helpdesk&ticket=HD-4711")
    await page.get_by_label("Ticket subject (shown to the user)").fill("Printer offline")
    await page.get_by_label("Device", exact=True).select_option(desk["device"]["id"])
    await page.get_by_label("Reason").fill("Printer driver keeps crashing after the update")
    await page.get_by_label("Run commands (terminal)").check()
    await shot(page, "request")
    mark = agent.out.mark()
    await page.get_by_role("button", name="Request consent").click()
    # 3. It waits for the user; the code is there to read to them.
    await page.wait_for_selector('[data-state="awaiting_consent"]')
    assert re.fullmatch(r"\d{4}-\d{6}", (await page.locator("#consent-code").inner_text()).strip())
    await shot(page, "waiting")
    # 4. The user answers yes at the agent's prompt on their computer.
    asked = await _prompt(agent, r"(?s)Remote support request.*Allow\? \[y/N\] ", mark)
    assert "Tom T" in asked
    assert "Printer offline" in asked
    mark = agent.out.mark()
    agent.type("y\n")
    await _prompt(agent, r"approved: Tom T for helpdesk:HD-4711 may connect now", mark)
    await page.wait_for_selector('#session-status [data-state="approved"]')
    await shot(page, "approved")
    # 5. The terminal in the browser.
    async with page.context.expect_page() as opened:
        await page.get_by_role("link", name="Open terminal").click()
    terminal = await opened.value
    await terminal.wait_for_function(f"{STATUS}.startsWith('connected to')")
    status = await terminal.locator("#status").inner_text()
    assert status == f"connected to {desk['device']['name']} for HD-4711 — recorded"
    await terminal.locator(".xterm-helper-textarea").focus()
    await terminal.keyboard.type("echo hello")
    await terminal.keyboard.press("Enter")
    await terminal.wait_for_function(f"{ROWS}.split('\\n').some((l) => l.trim() === 'hello')")
    await shot(terminal, "terminal")
    # 6. Done: the technician ends the session; the terminal says who ended it and why.
    await page.wait_for_selector('#session-status [data-state="active"]')
    await page.get_by_role("button", name="End session").click()
    await page.wait_for_selector('#session-status [data-state="ended"]')
    await shot(page, "ended")
    await terminal.wait_for_function(f"{STATUS}.startsWith('disconnected')")
    said = await terminal.locator("#status").inner_text()
    assert "ended from the console — by Tom T" in said
    await shot(terminal, "terminal-ended")


async def test_end_user_journey(served: Served, desk: dict[str, Any], logins: Logins) -> None:
    shot, agent = Shots("end-user"), desk["agent"]
    phone = await logins.anonymous(viewport={"width": 390, "height": 844})
    page = await logins.page(phone)
    # Run 1: the technician asks; the user has the code and approves on the web.
    mark = agent.out.mark()
    first = await asyncio.to_thread(
        _request, served, desk["token"], desk["device"], "HD-4712", "Outlook crashes"
    )
    await _prompt(agent, r"Allow\? \[y/N\] ", mark)  # nobody answers at the device
    await page.goto(f"{served.url}/consent")
    await page.get_by_label("Support code").fill(first["consent"]["code"])
    await shot(page, "code")
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_selector("text=Who is asking")
    body = await page.locator("main").inner_text()
    for expected in (
        "Tom T",
        "HD-4712",
        "Outlook crashes",
        "run commands on your computer",
        "Yes — the terminal (everything typed and shown) is recorded",
    ):
        assert expected in body, expected
    await shot(page, "request")
    mark = agent.out.mark()
    await page.get_by_label("Your name").fill("Erika Mustermann")
    await page.get_by_role("button", name="Approve").click()
    await page.wait_for_selector("text=End this session now")
    await shot(page, "approved")
    # The prompt on the device closes and says what happened.
    said = await _prompt(agent, r"[^\n]*approved on the web by Erika Mustermann[^\n]*", mark)
    assert "Tom T for helpdesk:HD-4712" in said
    with api(served, desk["token"]) as client:  # the technician no longer needs it
        assert client.post(f"/api/v1/sessions/{first['id']}/cancel", json={}).status_code == 200

    # Run 2: approved, the technician connected from their command line; the user revokes.
    second = await asyncio.to_thread(
        _request, served, desk["token"], desk["device"], "HD-4713", "VPN drops"
    )
    await page.goto(f"{served.url}/consent")
    await page.get_by_label("Support code").fill(second["consent"]["code"])
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_label("Your name").fill("Erika Mustermann")
    await page.get_by_role("button", name="Approve").click()
    await page.wait_for_selector("text=End this session now")
    connect = subprocess.Popen(
        [str(BIN / "supportbroker"), "connect", second["id"], "--url", served.url],
        env={**served.env, "SUPPORTBROKER_TOKEN": desk["token"]},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watch: subprocess.Popen[bytes] | None = None
    try:
        await page.wait_for_selector('#consent-live[data-state="active"]')
        # The page says who is connected, live (it polls; no reload) ...
        now = page.locator("#connected-now")
        await now.filter(
            has_text="Tom T (the technician of this session) on the terminal"
        ).wait_for()
        await shot(page, "in-progress")
        # ... a supervisor of the group starts watching from their command line ...
        served.cli("user", "create", "sue", "--role", "supervisor", "--display-name", "Sue S")
        served.cli("group", "add-member", "front-office", "sue")
        issued = served.cli(
            "token", "create", "--name", "sue-cli", "--user", "sue",
            "--scope", "sessions:read", "--scope", "sessions:supervise",
        ).stdout  # fmt: skip
        sue = re.search(r"secret \(shown only now\): (\S+)", issued)
        assert sue, issued
        watch = subprocess.Popen(
            [str(BIN / "supportbroker"), "connect", second["id"], "--url", served.url,
             "--mode", "watch"],
            env={**served.env, "SUPPORTBROKER_TOKEN": sue.group(1)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        watching = "Sue S (a supervisor, watching without typing) on the terminal"
        await now.filter(has_text=watching).wait_for()
        await shot(page, "supervisor-watching")
        # ... and stops: the page says she left
        watch.terminate()
        await asyncio.to_thread(watch.wait, 60)
        await page.locator('#connected-log li[data-here="no"]', has_text="Sue S").wait_for()
        assert "Sue S" not in await now.inner_text()
        await shot(page, "supervisor-left")
        await page.get_by_role("button", name="End this session now").click()
        await page.wait_for_selector("text=Ended by revocation")
        await shot(page, "revoked")
        _, err = await asyncio.to_thread(connect.communicate, None, 60)
    finally:
        if connect.poll() is None:
            connect.kill()
        if watch is not None and watch.poll() is None:
            watch.kill()
    banner = err.decode()
    assert f"connected to {desk['device']['name']} for HD-4713 — recorded" in banner
    assert "the session was revoked — revoked by the end user (by Erika Mustermann)" in banner
    await phone.close()


async def test_auditor_journey(
    served: Served, desk: dict[str, Any], logins: Logins, tmp_path: Path
) -> None:
    shot, agent = Shots("auditor"), desk["agent"]
    # What there is to audit: a session on HD-4800, approved at the device, in which the
    # technician ran a command from their command line, then ended.
    mark = agent.out.mark()
    created = await asyncio.to_thread(
        _request, served, desk["token"], desk["device"], "HD-4800", "Disk full"
    )
    await _prompt(agent, r"Allow\? \[y/N\] ", mark)
    agent.type("y\n")
    with api(served, desk["token"]) as client:
        await asyncio.to_thread(wait_state, client, created["id"], "approved")
    connect = subprocess.run(
        [str(BIN / "supportbroker"), "connect", created["id"], "--url", served.url],
        env={**served.env, "SUPPORTBROKER_TOKEN": desk["token"]},
        input=b"echo audit-trail-$((40+2))\nexit\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert b"audit-trail-42" in connect.stdout, connect.stderr
    with api(served, desk["token"]) as client:
        ended = client.post(f"/api/v1/sessions/{created['id']}/end", json={"reason": "fixed"})
        assert ended.status_code == 200, ended.text

    page = await logins.page(await logins.anonymous())
    await page.goto(f"{served.url}/login")  # the address people are given
    await sign_in(page, "alice", desk["alice"], new_password=NEW_PASSWORD)
    # Search, then the ticket's timeline.
    await page.wait_for_url("**/ui/audit/sessions")
    await page.get_by_label("Ticket").fill("HD-4800")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_selector("text=Disk full")
    await shot(page, "search")
    await page.get_by_role("link", name="Ticket timeline").first.click()
    await page.wait_for_selector('[data-integrity="ok"]')
    await shot(page, "timeline")
    # Replay, with a reason (itself audited).
    await page.get_by_role("link", name="recordings").first.click()
    await page.get_by_label("Why do you view this recording?").fill("audit request 17")
    await page.get_by_role("button", name="Record my reason and play").click()
    await page.wait_for_selector("#player .ap-wrapper")
    await page.locator("#player .ap-wrapper").first.focus()
    await page.keyboard.press("Space")
    await page.wait_for_function(
        "document.querySelector('#player').innerText.includes('audit-trail-42')"
    )
    await shot(page, "replay")
    # Verify the whole log.
    await page.get_by_role("link", name="Log integrity").click()
    await page.get_by_role("button", name="Verify the whole log now").click()
    await page.wait_for_selector('#verify-result [data-integrity="ok"]')
    await shot(page, "verified")
    # Export the evidence bundle and the public key, and verify them on the command line.
    await page.goto(f"{served.url}/ui/audit/tickets/helpdesk/HD-4800")
    await page.get_by_label("Why do you export this evidence?").fill("audit request 17")
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download evidence bundle").click()
    bundle = tmp_path / "HD-4800.zip"
    await (await info.value).save_as(bundle)
    await shot(page, "exported")
    key = tmp_path / "checkpoint.pub"
    key.write_text(await (await page.request.get(f"{served.url}/api/v1/audit/public-key")).text())
    verified = served.cli("audit", "verify", str(bundle), "--public-key", str(key), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK" in verified.stdout.upper()


async def test_admin_journey(
    served: Served, desk: dict[str, Any], logins: Logins, tmp_path: Path
) -> None:
    shot = Shots("admin")
    assert served.admin_password, "the first run printed no one-time password"
    page = await logins.page(await logins.anonymous())
    await page.goto(served.login_url)  # exactly what `supportbroker serve` printed
    await shot(page, "login")
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill(served.admin_password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/ui/password*")
    await shot(page, "own-password")
    await page.get_by_label("Current password").fill(served.admin_password)
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("New password again").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await page.wait_for_url("**/ui/admin")
    await shot(page, "status")
    # A user.
    await page.get_by_role("link", name="Users").click()
    await page.get_by_label("Username").fill("nina")
    await page.get_by_label("Full name").fill("Nina Novak")
    await page.get_by_label("Role", exact=True).select_option("technician")
    await page.get_by_role("button", name="Create user").click()
    await page.wait_for_selector("#secret-value")
    assert "one-time password for nina" in (await page.locator(".secret").inner_text()).lower()
    await shot(page, "user")
    # A group, with nina serving it.
    await page.get_by_role("link", name="Device groups").click()
    await page.get_by_label("Name", exact=True).fill("Accounting")
    await page.get_by_label("Description").fill("Finance laptops")
    await page.get_by_role("button", name="Create group").click()
    await page.wait_for_selector("h1:has-text('Device group Accounting')")
    await page.get_by_label("Add a technician").select_option(label="Nina Novak (nina)")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.wait_for_selector("#members-h ~ ul >> text=Nina Novak")
    await shot(page, "group")
    # An enrollment token for a device of that group.
    await page.get_by_role("button", name="Create enrollment token").click()
    await page.wait_for_selector("#secret-value")
    token = (await page.locator("#secret-value").inner_text()).strip()
    assert token.startswith("sbe")
    command = await page.locator("#enroll-command").inner_text()
    assert command.startswith(
        f"supportbroker-agent enroll --broker 127.0.0.1:{served.gateway_port} --token {token}"
    )
    await shot(page, "enrollment-token")
    # Beside it, how to install the agent from this broker: the URL pip gets is the agent's
    # own wheel (tests/gateway/test_dist.py installs it into a fresh venv).
    install = await page.locator("#install-command").inner_text()
    wheel_url = install.removeprefix("pip install ")
    assert wheel_url.startswith(f"{served.url}/api/v1/agent/dist/supportbroker_agent-")
    assert wheel_url.endswith("-py3-none-any.whl")
    wheel = await page.request.get(wheel_url)
    assert wheel.ok
    with zipfile.ZipFile(io.BytesIO(await wheel.body())) as files:
        assert "agent/cli.py" in files.namelist()
        assert not [n for n in files.namelist() if n.startswith(("broker/", "audit/"))]
    # The command the page gives, run on a new device, enrolls it into the group.
    device_dir = tmp_path / "accounting-laptop"
    enrolled = subprocess.run(
        [str(BIN / shlex.split(command)[0]), *shlex.split(command)[1:]],
        env=clean_env(SUPPORTBROKER_AGENT_CONFIG_DIR=str(device_dir)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    listed = served.cli("device", "list", "--group", "Accounting", "--json").stdout
    assert json.loads(listed)["total"] == 1
    users = json.loads(served.cli("user", "list", "--json").stdout)
    assert "nina" in json.dumps(users)
    assert os.path.exists(served.data_dir / "supportbroker.db")  # the data folder setting
