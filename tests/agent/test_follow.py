"""The agent's prompt follows decisions taken elsewhere, and never reports what did not happen.

Against a fake broker on loopback (real asyncssh, the real agent run loop): a web approval or
denial closes the prompt and says who decided; an answer typed after the request was settled
is not reported as approved; an accepted answer is reported only once the broker took it;
without a terminal the agent says where the request waits and answers nothing itself.
The same against the real broker: tests/gateway/test_prompt_follows.py.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from agent.consent import TerminalConsole
from tests.agent.loopback import (
    FakeBroker,
    Link,
    Prompter,
    consent_request,
    enroll_locally,
    running_agent,
    settings_for,
)

WEB = "https://broker.example/consent"


async def _notice(prompter: Any, text: str, timeout: float = 10.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            found = [n for n in prompter.notices if text in n]
            if found:
                return found[0]
            await asyncio.sleep(0.02)


def _approved_remotely(session_id: str, outcome: str) -> dict[str, Any]:
    return {
        "type": "approved_remotely",
        "session_id": session_id,
        "capabilities": ["shell"],
        "technician": "Tina Tech",
        "ticket": "HD-7",
        "duration_minutes": 30,
        "outcome": outcome,
    }


async def _marker(link: Link, session_id: str) -> None:
    """A second request answered at once: its decision is the first one the broker gets, so
    nothing was sent for the request before it."""
    link.send(consent_request(session_id, ["shell"]))
    decision = await link.expect("consent_decision")
    assert decision["receipt"]["session_id"] == session_id


async def test_a_web_approval_closes_the_prompt_and_says_who(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path, consent_timeout_seconds=30)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    prompter = Prompter([None, True])  # nobody answers the first prompt here
    async with running_agent(settings, prompter, fake_broker.fingerprint) as core:
        link = await fake_broker.link({})
        link.send(consent_request("s-web", ["shell"]))
        await asyncio.wait_for(prompter.asked.wait(), 10)
        link.send(_approved_remotely("s-web", "approved on the web by Erika"))
        assert (await link.expect("granted"))["session_id"] == "s-web"
        said = await _notice(prompter, "approved on the web by Erika")
        assert "Tina Tech for HD-7" in said
        assert prompter.closed == ["s-web"]  # the prompt went away
        assert [g.session_id for g in core.grants.active()] == ["s-web"]
        await _marker(link, "s-next")


async def test_a_web_denial_closes_the_prompt_and_grants_nothing(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path, consent_timeout_seconds=30)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    prompter = Prompter([None, True])
    async with running_agent(settings, prompter, fake_broker.fingerprint) as core:
        link = await fake_broker.link({})
        link.send(consent_request("s-denied", ["shell"]))
        await asyncio.wait_for(prompter.asked.wait(), 10)
        link.send(
            {
                "type": "consent_closed",
                "session_id": "s-denied",
                "state": "denied",
                "outcome": "denied on the web by Erika",
            }
        )
        said = await _notice(prompter, "denied on the web by Erika")
        assert said == "the request from Tina Tech for HD-7 was denied on the web by Erika"
        assert prompter.closed == ["s-denied"]
        await _marker(link, "s-next")  # no answer of ours was sent for s-denied
        assert [g.session_id for g in core.grants.active()] == ["s-next"]


async def test_an_answer_after_the_web_decided_is_not_reported_as_approved(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    prompter = Prompter([True])  # the user types y ...
    async with running_agent(settings, prompter, fake_broker.fingerprint) as core:
        link = await fake_broker.link({})
        decision = await link.approve("s-late", ["shell"])
        assert decision["receipt"]["decision"] == "approve"
        # ... but the end user had denied it on the web a moment before: the broker says so.
        link.send(
            {
                "type": "consent_result",
                "session_id": "s-late",
                "accepted": False,
                "state": "denied",
                "outcome": "denied on the web by Erika",
                "detail": "session s-late is denied; cannot go to approved",
            }
        )
        said = await _notice(prompter, "your answer was not used")
        assert "was already denied on the web by Erika" in said
        assert not any(n.startswith("approved") for n in prompter.notices)
        assert core.grants.active() == []  # the grant taken with the answer is gone


async def test_an_accepted_answer_is_reported_once_the_broker_took_it(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    prompter = Prompter([True, False])
    async with running_agent(settings, prompter, fake_broker.fingerprint):
        link = await fake_broker.link({})
        await link.approve("s-ok", ["shell"])
        assert not any(n.startswith("approved") for n in prompter.notices)  # not yet taken
        link.send({"type": "consent_result", "session_id": "s-ok", "accepted": True})
        said = await _notice(prompter, "approved:")
        assert "Tina Tech for HD-7 may connect now" in said
        await link.approve("s-no", ["shell"])
        link.send({"type": "consent_result", "session_id": "s-no", "accepted": True})
        assert await _notice(prompter, "denied: Tina Tech is told")


async def test_without_a_terminal_the_agent_leaves_the_request_to_the_web(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path, consent_timeout_seconds=0.3)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    out = io.StringIO()
    console = TerminalConsole(out=out, notify=False, interactive=False)  # run as a service
    async with running_agent(settings, console, fake_broker.fingerprint):  # type: ignore[arg-type]
        link = await fake_broker.link({}, consent_page=WEB)
        request = {**consent_request("s-service", ["shell"]), "expires_at": "2031-01-01T10:00Z"}
        link.send(request)
        async with asyncio.timeout(10):
            while "does not answer it by itself" not in out.getvalue():
                await asyncio.sleep(0.02)
        said = out.getvalue()
        assert WEB in said
        assert "Tina Tech for HD-7" in said
        assert "until 2031-01-01T10:00Z" in said
        assert "Allow?" not in said  # nobody to ask
        # Three times the agent's own time-out: an agent that denied by itself would have.
        await asyncio.sleep(1.0)
        assert all(m.get("type") != "consent_decision" for m in link.inbox._queue)  # type: ignore[attr-defined]
        link.send(
            {
                "type": "consent_closed",
                "session_id": "s-service",
                "state": "expired",
                "outcome": "expired: nobody answered in time",
            }
        )
        async with asyncio.timeout(10):
            while "was expired: nobody answered in time" not in out.getvalue():
                await asyncio.sleep(0.02)
