"""A device's approval may narrow the rights (the desktop dialog's unticked boxes): the
signed receipt states what was granted, the broker gives the session exactly that, and
approving with nothing left is a signed denial."""

from __future__ import annotations

from typing import Any

import httpx

from agent.consent import Answer, ConsentPrompt
from tests.gateway.helpers import (
    ScriptedPrompter,
    enrolled_agent,
    events,
    request_session,
    ticket_ref,
    wait_events,
    wait_state,
)


class TickingPrompter(ScriptedPrompter):
    """Approves with only ``granted`` left ticked."""

    def __init__(self, granted: tuple[str, ...]) -> None:
        super().__init__()
        self.granted = granted

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> Answer:  # type: ignore[override]
        self.prompts.append(prompt)
        self.asked.set()
        return Answer(True, "user", self.granted)


async def _run(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    granted: tuple[str, ...],
    want: str,
) -> tuple[dict[str, Any], Any]:
    prompter = TickingPrompter(granted)
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell", "files"])
        await wait_state(client, token, created["id"], want)
        [sealed] = await wait_events(app, await ticket_ref(app, created["id"]), "consent.receipt")
        resp = await client.get(
            f"/api/v1/sessions/{created['id']}", headers={"Authorization": f"Bearer {token}"}
        )
        grants = {g.session_id: g.capabilities for g in agent.core.grants.active()}
        return {"session": resp.json(), "grants": grants}, sealed.payload["data"]["receipt"]
    finally:
        await agent.stop()


async def test_approval_with_a_right_unticked_narrows_the_session(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
) -> None:
    seen, receipt = await _run(app, gateway, people, tmp_path, client, ("files",), "approved")
    assert receipt["decision"] == "approve"
    assert receipt["capabilities"] == ["files"]
    assert seen["session"]["capabilities"] == ["files"]
    assert seen["grants"] == {seen["session"]["id"]: frozenset({"files"})}


async def test_approval_with_nothing_left_is_a_denial(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
) -> None:
    seen, receipt = await _run(app, gateway, people, tmp_path, client, (), "denied")
    assert receipt["decision"] == "deny"
    assert receipt["why"] == "declined"
    assert seen["grants"] == {}
    ref_events = await events(app, await ticket_ref(app, seen["session"]["id"]), "session.denied")
    assert ref_events
