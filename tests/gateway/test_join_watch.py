"""Expert join and supervisor watch of a running agent shell, through the real gateway: the
invited expert types into the same shell, the supervisor only sees it (their keys are
dropped), each attach is an audit event; an uninvited technician cannot join; the time
limit ends the session and closes every socket. A supervisor of the device's group watches
the same way; one of another group, or asking for control, is refused."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import httpx
import websockets

from broker.db.base import utcnow
from broker.sessions.models import RemoteSession
from broker.tasks import sweep_once
from tests.factories import consent_token, make_token, make_user
from tests.gateway.helpers import (
    ScriptedPrompter,
    drain,
    enrolled_agent,
    events,
    read_until,
    recording_text,
    request_session,
    terminal_uri,
    ticket_ref,
    wait_state,
)
from tests.ui.browsers import browser


async def _join_group(app: Any, group: Any, user: Any) -> None:
    from broker.devices.models import GroupMember

    async with app.state.sessionmaker() as db, db.begin():
        db.add(GroupMember(group_id=group.id, user_id=user.id))


async def _ticket_status(live_url: str, token: str, session_id: str, mode: str) -> int:
    async with httpx.AsyncClient(base_url=live_url, timeout=10) as http:
        resp = await http.post(
            f"/api/v1/gateway/sessions/{session_id}/terminal-ticket",
            json={"mode": mode},
            headers={"Authorization": f"Bearer {token}"},
        )
    return resp.status_code


async def _attached(tech_ws: Any, viewer: Any) -> None:
    """Wait until ``viewer`` receives the shell's output (its socket attaches to the relay
    after an audited commit, so output before that moment is not sent to it)."""
    for attempt in range(50):
        marker = f"sync-{attempt}-$((40+2))"
        await tech_ws.send(json.dumps({"type": "input", "data": f"echo {marker}\n"}))
        try:
            await read_until(viewer, f"sync-{attempt}-42".encode(), timeout=1.0)
        except TimeoutError:
            continue
        return
    raise AssertionError("the viewer never received the shell's output")


async def test_expert_joins_supervisor_watches_time_limit_ends(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    expert, _ = await make_user(app, "technician")
    outsider, _ = await make_user(app, "technician")
    for member in (expert, outsider):
        await _join_group(app, people["group"], member)
    expert_token = await make_token(app, expert)
    outsider_token = await make_token(app, outsider)
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        sid = session["id"]
        await wait_state(client, people["tech_token"], sid, "approved")
        tech_uri = await terminal_uri(live_url, people["tech_token"], sid)
        async with websockets.connect(tech_uri) as tech_ws:
            await tech_ws.send(json.dumps({"type": "input", "data": "echo tech-$((1+1))\n"}))
            await read_until(tech_ws, b"tech-2")

            # Not invited: refused, although a technician of the device's group.
            assert await _ticket_status(live_url, outsider_token, sid, "join") == 403
            tech_page = await browser(app, people["tech"])
            invited = await tech_page.post(f"/ui/sessions/{sid}/invite", {"expert_id": expert.id})
            assert invited.status_code == 303, invited.text
            await tech_page.client.aclose()
            assert await _ticket_status(live_url, outsider_token, sid, "join") == 403

            expert_uri = await terminal_uri(live_url, expert_token, sid, "join")
            watch_uri = await terminal_uri(live_url, people["admin_token"], sid, "watch")
            async with (
                websockets.connect(expert_uri) as expert_ws,
                websockets.connect(watch_uri) as watch_ws,
            ):
                for viewer in (expert_ws, watch_ws):
                    await _attached(tech_ws, viewer)
                # The supervisor's keys never reach the shell ...
                await watch_ws.send(
                    json.dumps({"type": "input", "data": "echo watcher-$((3*3))\n"})
                )
                # ... the expert's do, and everyone sees the output.
                await expert_ws.send(
                    json.dumps({"type": "input", "data": "echo expert-$((2*4))\n"})
                )
                for ws in (tech_ws, expert_ws, watch_ws):
                    await read_until(ws, b"expert-8")

                # The time limit passes: the sweep ends the session and closes every socket.
                async with app.state.sessionmaker() as db, db.begin():
                    row = await db.get(RemoteSession, sid)
                    assert row is not None
                    row.deadline_at = utcnow() - timedelta(seconds=1)
                await sweep_once(app)
                seen = b""
                for ws in (tech_ws, expert_ws, watch_ws):
                    seen += await drain(ws)
        await wait_state(client, people["tech_token"], sid, "ended")
        assert b"watcher-9" not in seen
        recorded = await recording_text(app, sid, "expert-8")
        assert "watcher-9" not in recorded

        ref = await ticket_ref(app, sid)
        joined = await events(app, ref, "session.expert_joined")
        watching = await events(app, ref, "session.supervisor_watching")
        assert len(joined) == 1
        assert len(watching) == 1
        assert len(await events(app, ref, "session.expert_invited")) == 1
    finally:
        await agent.stop()
        await asyncio.sleep(0)


async def test_supervisor_of_the_group_watches_read_only(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    from tests.factories import make_group

    supervisor, _ = await make_user(app, "supervisor")
    elsewhere, _ = await make_user(app, "supervisor")
    await _join_group(app, people["group"], supervisor)
    await make_group(app, [elsewhere])
    token = await make_token(app, supervisor)
    other_token = await make_token(app, elsewhere)
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        sid = session["id"]
        await wait_state(client, people["tech_token"], sid, "approved")
        tech_uri = await terminal_uri(live_url, people["tech_token"], sid)
        async with websockets.connect(tech_uri) as tech_ws:
            await tech_ws.send(json.dumps({"type": "input", "data": "echo tech-$((1+1))\n"}))
            await read_until(tech_ws, b"tech-2")
            assert await _ticket_status(live_url, other_token, sid, "watch") == 403
            assert await _ticket_status(live_url, token, sid, "control") == 403
            assert await _ticket_status(live_url, token, sid, "join") == 403
            watch_uri = await terminal_uri(live_url, token, sid, "watch")
            async with websockets.connect(watch_uri) as watch_ws:
                await _attached(tech_ws, watch_ws)
                await watch_ws.send(
                    json.dumps({"type": "input", "data": "echo overseer-$((3*5))\n"})
                )
                await tech_ws.send(json.dumps({"type": "input", "data": "echo tech-$((2*5))\n"}))
                await read_until(watch_ws, b"tech-10")
                ended = await client.post(
                    f"/api/v1/sessions/{sid}/end",
                    json={"reason": "watched enough: wrong device"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert ended.status_code == 200, ended.text
                seen = await drain(tech_ws) + await drain(watch_ws)
        assert b"overseer-15" not in seen
        ref = await ticket_ref(app, sid)
        watching = await events(app, ref, "session.supervisor_watching")
        assert len(watching) == 1
        assert watching[0].payload["actor"]["role"] == "supervisor"
    finally:
        await agent.stop()
        await asyncio.sleep(0)


async def _consent_page(client: httpx.AsyncClient, token: str) -> str:
    page = await client.get(f"/consent/{token}")
    assert page.status_code == 200, page.text
    return page.text


async def _until_page_says(client: httpx.AsyncClient, token: str, text: str) -> str:
    """The page once ``text`` is on it (a socket's end is noted when the server sees it)."""
    for _ in range(200):
        html = await _consent_page(client, token)
        if text in html:
            return html
        await asyncio.sleep(0.05)
    raise AssertionError(f"the consent page never said {text!r}")


async def test_the_end_user_sees_who_joins_watches_and_leaves(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    expert, _ = await make_user(app, "technician")
    supervisor, _ = await make_user(app, "supervisor")
    for member in (expert, supervisor):
        await _join_group(app, people["group"], member)
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        sid, token = session["id"], consent_token(session)
        await wait_state(client, people["tech_token"], sid, "approved")
        assert "Nobody is connected now." in await _consent_page(client, token)
        tech_uri = await terminal_uri(live_url, people["tech_token"], sid)
        async with websockets.connect(tech_uri) as tech_ws:
            await tech_ws.send(json.dumps({"type": "input", "data": "echo tech-$((1+1))\n"}))
            await read_until(tech_ws, b"tech-2")
            tech_page = await browser(app, people["tech"])
            invited = await tech_page.post(f"/ui/sessions/{sid}/invite", {"expert_id": expert.id})
            assert invited.status_code == 303, invited.text
            await tech_page.client.aclose()
            expert_ws = await websockets.connect(
                await terminal_uri(live_url, await make_token(app, expert), sid, "join")
            )
            watch_ws = await websockets.connect(
                await terminal_uri(live_url, await make_token(app, supervisor), sid, "watch")
            )
            for viewer in (expert_ws, watch_ws):
                await _attached(tech_ws, viewer)
            now = await _consent_page(client, token)
            line = now.split('id="connected-now"', 1)[1].split("</p>", 1)[0]
            assert f"{people['tech'].display_name} (the technician of this session)" in line
            assert (
                f"{expert.display_name} (an expert the technician invited) on the terminal" in line
            )
            assert f"{supervisor.display_name} (a supervisor, watching without typing)" in line
            # the page's live region changes with it (ui.js swaps it when the key changes)
            assert re.search(r'data-live-key="active\|[^"]*\|3\|3"', now), now

            await watch_ws.close()
            left = await _until_page_says(client, token, '|3|2"')
            line = left.split('id="connected-now"', 1)[1].split("</p>", 1)[0]
            assert supervisor.display_name not in line
            assert expert.display_name in line
            assert f'<li data-here="no">{supervisor.display_name} (a supervisor' in left
            await expert_ws.close()
            left = await _until_page_says(client, token, '|3|1"')
            assert f'<li data-here="no">{expert.display_name} (an expert' in left
        await _until_page_says(client, token, '|3|0"')
    finally:
        await agent.stop()
        await asyncio.sleep(0)
