"""The agent's prompt follows what was decided on the web, with the real broker and gateway.

The person at the device reads the agent's real terminal console (its output is captured):
- the web approves while "Allow? [y/N]" is up: the prompt closes, says who approved, and
  nothing later claims the request was denied for want of an answer;
- the web denies while the prompt is up: it closes and says so, nothing is granted;
- an answer already on its way when the web decided: the broker refuses the receipt and the
  agent says how the request was settled (never "approved" for a denied request);
- an agent without a terminal (a service) answers nothing by itself: it says where the
  request waits (the consent page), the request stays answerable there past the agent's own
  time-out, and the request's own expiry reaches the agent as such.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.consent import ConsentPrompt, TerminalConsole
from tests.factories import consent_token, make_group
from tests.gateway.helpers import (
    enrolled_agent,
    events,
    request_session,
    session_state,
    ticket_ref,
    wait_state,
)

LONGER_THAN_THE_AGENTS_TIMEOUT = 2.0  # agent_settings(): consent_timeout_seconds=1.0


class Terminal:
    """The device's terminal: the agent's console reads a pipe the test types into, and
    writes what the person would read into ``out``."""

    def __init__(self) -> None:
        read_end, self.keys = os.pipe()
        self.reader = os.fdopen(read_end)
        self.out = io.StringIO()
        self.console = TerminalConsole(
            out=self.out, inp=self.reader, notify=False, interactive=True
        )

    def type(self, text: str) -> None:
        os.write(self.keys, text.encode())


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    found = Terminal()
    try:
        yield found
    finally:
        os.close(found.keys)  # end of input: the console's reader ends
        if found.console._reader is not None:
            await asyncio.wait_for(found.console._reader, 10)
        found.reader.close()


async def _shows(out: io.StringIO, text: str, timeout: float = 15.0) -> str:
    async with asyncio.timeout(timeout):
        while text not in out.getvalue():
            await asyncio.sleep(0.02)
    return out.getvalue()


async def _decide_on_the_web(
    client: httpx.AsyncClient, created: dict[str, Any], decision: str
) -> None:
    resp = await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": decision, "name": "Erika"},
    )
    assert resp.status_code == 200, resp.text


async def test_a_web_approval_closes_the_terminal_prompt(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    terminal: Terminal,
) -> None:
    out = terminal.out
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, terminal.console)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        await _shows(out, "Allow? [y/N]")
        await _decide_on_the_web(client, created, "approve")
        shown = await _shows(out, "approved on the web by Erika")
        assert "the request you were asked about from" in shown
        await asyncio.sleep(LONGER_THAN_THE_AGENTS_TIMEOUT)  # a prompt left up would time out
        terminal.type("y\n")  # a late key press answers nothing now
        await wait_state(client, token, created["id"], "approved")
        shown = out.getvalue()
        assert "no answer in time" not in shown
        assert "denied" not in shown
        ref = await ticket_ref(app, created["id"])
        assert await events(app, ref, "consent.receipt") == []  # the device answered nothing
    finally:
        await agent.stop()


async def test_a_web_denial_closes_the_terminal_prompt(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    terminal: Terminal,
) -> None:
    out = terminal.out
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, terminal.console)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        await _shows(out, "Allow? [y/N]")
        await _decide_on_the_web(client, created, "deny")
        await _shows(out, "was denied on the web by Erika")
        terminal.type("y\n")  # too late: the prompt is gone
        await asyncio.sleep(LONGER_THAN_THE_AGENTS_TIMEOUT)
        assert "approved" not in out.getvalue()
        assert agent.core.grants.active() == []
        assert await session_state(client, token, created["id"]) == "denied"
    finally:
        await agent.stop()


class AnswerOnItsWay:
    """The user pressed y just as the web decided: the answer leaves whatever happens."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> tuple[bool, str]:
        self.asked.set()
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # already typed: closing the prompt cannot take the key press back
        return True, "user"

    def notice(self, text: str) -> None:
        self.notices.append(text)


async def test_an_answer_the_web_overtook_is_not_reported_as_approved(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
) -> None:
    prompter = AnswerOnItsWay()
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        await asyncio.wait_for(prompter.asked.wait(), 10)
        await _decide_on_the_web(client, created, "deny")
        prompter.release.set()
        async with asyncio.timeout(15):
            while not any("your answer was not used" in n for n in prompter.notices):
                await asyncio.sleep(0.02)
        told = [n for n in prompter.notices if "your answer was not used" in n]
        assert "was already denied on the web by Erika" in told[0]
        assert not any(n.startswith("approved") for n in prompter.notices)
        assert agent.core.grants.active() == []
        assert await session_state(client, token, created["id"]) == "denied"
        ref = await ticket_ref(app, created["id"])
        assert await events(app, ref, "consent.receipt") == []  # refused, not sealed
    finally:
        await agent.stop()


async def test_an_agent_without_a_terminal_leaves_consent_to_the_web(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
) -> None:
    out = io.StringIO()
    console = TerminalConsole(out=out, notify=False, interactive=False)  # run as a service
    group = await make_group(app, [people["tech"]], consent_timeout_seconds=30)
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, console)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        shown = await _shows(out, "does not answer it by itself")
        assert f"{app.state.settings.base_url}/consent" in shown
        assert "enter the code the technician gives you" in shown
        assert "Allow?" not in shown
        await asyncio.sleep(LONGER_THAN_THE_AGENTS_TIMEOUT)
        assert await session_state(client, token, created["id"]) == "awaiting_consent"
        await _decide_on_the_web(client, created, "approve")
        await _shows(out, "approved on the web by Erika")
        await wait_state(client, token, created["id"], "approved")
    finally:
        await agent.stop()


async def test_the_requests_own_expiry_reaches_an_agent_without_a_terminal(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
) -> None:
    out = io.StringIO()
    console = TerminalConsole(out=out, notify=False, interactive=False)
    group = await make_group(app, [people["tech"]], consent_timeout_seconds=2)
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, console)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        await _shows(out, "does not answer it by itself")
        await _shows(out, "was expired: nobody answered in time")
        assert await session_state(client, token, created["id"]) == "expired"
    finally:
        await agent.stop()
