"""Recordings: fail-closed when a chunk cannot be sealed, and the auditor's replay endpoint
(audit:read, a reason, every playback audited before the cast is returned)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import websockets

from tests.factories import make_token, make_user
from tests.gateway.helpers import (
    ScriptedPrompter,
    drain,
    enrolled_agent,
    events,
    read_until,
    recordings,
    request_session,
    terminal_uri,
    ticket_ref,
    wait_events,
    wait_state,
)


class FailingBegin:
    """The recording's transaction factory: ``allow`` calls work, then the disk is full."""

    def __init__(self, begin: Callable[[], Any], allow: int) -> None:
        self.begin, self.allow, self.calls = begin, allow, 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.begin() if self.calls <= self.allow else self._broken()

    @contextlib.asynccontextmanager
    async def _broken(self) -> AsyncIterator[Any]:
        raise OSError(28, "No space left on device")
        yield  # pragma: no cover


async def _approved_shell(app: Any, gateway: Any, people: Any, tmp_path: Any, client: Any):
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
    await wait_state(client, people["tech_token"], session["id"], "approved")
    return agent, session["id"]


async def test_unsealable_chunk_stops_the_session_and_seals_a_gap(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
):
    failing = FailingBegin(app.state.engine.begin, allow=2)  # the header and one chunk
    gateway.recording_begin = failing
    agent, sid = await _approved_shell(app, gateway, people, tmp_path, client)
    try:
        async with websockets.connect(
            await terminal_uri(live_url, people["tech_token"], sid)
        ) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo first-$((1+1))\n"}))
            await read_until(ws, b"first-2")
            await wait_events(app, await ticket_ref(app, sid), "recording.chunk")
            # Keep the terminal printing: the next chunk cannot be sealed.
            await ws.send(
                json.dumps({"type": "input", "data": "while :; do echo tick; sleep 0.2; done\n"})
            )
            await drain(ws, timeout=15)  # fail-closed: the broker hangs up the terminal
        await wait_state(client, people["tech_token"], sid, "failed")
        ref = await ticket_ref(app, sid)
        (gap,) = await events(app, ref, "recording.gap")
        (found,) = await recordings(app, sid)
        assert gap.payload["data"]["session_id"] == sid
        assert gap.payload["data"]["recording_id"] == found.recording_id
        assert "No space left on device" in gap.payload["data"]["why"]
        assert found.ended_at is None  # no end record could be sealed: replay says incomplete
        (failed,) = await events(app, ref, "session.failed")
        assert "recording failed" in json.dumps(failed.payload)
        for _ in range(50):  # the agent is told and drops the grant
            if not agent.core.grants.active():
                break
            await asyncio.sleep(0.1)
        assert agent.core.grants.active() == []
    finally:
        await agent.stop()


async def test_replay_needs_audit_scope_and_reason_and_is_audited(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
):
    auditor, _ = await make_user(app, "auditor")
    auditor_token = await make_token(app, auditor)
    agent, sid = await _approved_shell(app, gateway, people, tmp_path, client)
    tech = {"Authorization": f"Bearer {people['tech_token']}"}
    audit = {"Authorization": f"Bearer {auditor_token}"}
    try:
        async with websockets.connect(
            await terminal_uri(live_url, people["tech_token"], sid)
        ) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo replay-$((2*21))\n"}))
            await read_until(ws, b"replay-42")
            assert (await client.post(f"/api/v1/sessions/{sid}/end", headers=tech)).is_success
            await drain(ws)
    finally:
        await agent.stop()
    url = f"/api/v1/gateway/sessions/{sid}/replay"
    async with asyncio.timeout(10):
        while not (found := await recordings(app, sid)) or found[0].ended_at is None:
            await asyncio.sleep(0.1)

    listing = await client.get(f"/api/v1/sessions/{sid}/recordings", headers=audit)
    assert listing.status_code == 200, listing.text
    (item,) = listing.json()["recordings"]
    assert item["sealed"]
    assert item["session_id"] == sid
    assert item["chunks"] >= 1
    assert (await client.get(f"/api/v1/sessions/{sid}/recordings", headers=tech)).status_code == 403

    ref = await ticket_ref(app, sid)
    assert (await client.post(url, json={"reason": "HD audit"}, headers=tech)).status_code == 403
    assert (await client.post(url, json={}, headers=audit)).status_code == 422
    assert (await client.post(url, json={"reason": "  "}, headers=audit)).status_code == 422
    assert await events(app, ref, "recording.viewed") == []

    resp = await client.post(url, json={"reason": "quarterly access review"}, headers=audit)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-asciicast")
    assert resp.headers["x-recording-complete"] == "true"
    assert resp.headers["x-recording-id"] == item["recording_id"]
    header, *lines = resp.text.splitlines()
    assert json.loads(header)["version"] == 2
    assert "replay-42" in "".join(json.loads(line)[2] for line in lines)

    (viewed,) = await events(app, ref, "recording.viewed")
    assert viewed.payload["actor"]["role"] == "auditor"
    assert viewed.payload["data"] == {
        "session_id": sid,
        "recording_id": item["recording_id"],
        "reason": "quarterly access review",
        "auditor_id": auditor.id,
        "auditor": viewed.payload["actor"]["name"],
    }
    unknown = await client.post(
        url, json={"reason": "x" * 5, "recording_id": "nope"}, headers=audit
    )
    assert unknown.status_code == 404
