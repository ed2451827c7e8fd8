"""The person at the device is told who is connected: the technician while a channel is open,
a supervisor watching (the broker's ``viewer`` message), and nobody once the session ends.
A prompter that keeps a notice on screen gets the whole list on every change."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import websockets
from sqlalchemy import select, update

from broker.db.base import utcnow
from broker.gateway.models import AgentKey
from broker.replicas.models import Replica
from broker.replicas.service import expire_dead
from tests.gateway.helpers import (
    ScriptedPrompter,
    enrolled_agent,
    read_until,
    request_session,
    terminal_uri,
    wait_state,
)


class ShowingPrompter(ScriptedPrompter):
    """Also keeps the list of who is connected, as the desktop dialog's notice does."""

    def __init__(self, answers: list[bool | None]) -> None:
        super().__init__(answers)
        self.shown: list[list[str]] = []

    def presence(self, people: list[str]) -> None:
        self.shown.append(list(people))


async def _noticed(prompter: ScriptedPrompter, *words: str, timeout: float = 10.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            for text in prompter.notices:
                if all(w in text for w in words):
                    return text
            await asyncio.sleep(0.05)


async def test_who_is_connected_is_shown_until_the_session_ends(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    prompter = ShowingPrompter([True])
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    tech = people["tech"].display_name
    admin = people["admin"].display_name
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        sid = session["id"]
        await wait_state(client, people["tech_token"], sid, "approved")
        async with websockets.connect(
            await terminal_uri(live_url, people["tech_token"], sid)
        ) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo hi-$((1+1))\n"}))
            await read_until(ws, b"hi-2")
            await _noticed(prompter, "connected:", tech, sid)
            assert prompter.shown[-1]
            assert tech in prompter.shown[-1][0]

            watch = await terminal_uri(live_url, people["admin_token"], sid, "watch")
            async with websockets.connect(watch):
                await _noticed(prompter, "connected:", admin, "supervisor, watching")
                assert any(admin in line for line in prompter.shown[-1])
            await _noticed(prompter, "disconnected:", admin, "supervisor, watching")
            assert not any(admin in line for line in prompter.shown[-1])

            resp = await client.post(
                f"/api/v1/sessions/{sid}/end",
                headers={"Authorization": f"Bearer {people['tech_token']}"},
            )
            assert resp.status_code == 200, resp.text
            await _noticed(prompter, "disconnected:", tech, sid)
        assert prompter.shown[-1] == []  # nobody left: the on-screen notice goes
    finally:
        await agent.stop()


async def _link_node(app: Any, device_id: str) -> str | None:
    async with app.state.sessionmaker() as db:
        key = await db.scalar(select(AgentKey).where(AgentKey.device_id == device_id))
        return key.connected_node if key is not None else None


async def test_a_replica_taken_for_dead_while_alive_writes_its_links_again(
    app: Any, gateway: Any, people: Any, tmp_path: Any
) -> None:
    """A heartbeat late past the lease: the lease holder clears this replica's agent links
    (broker.replicas.service.expire_dead), but the agents are still connected here. The
    next heartbeat finds its row gone and the gateway writes every link it holds again."""
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, ScriptedPrompter([]))
    replica = app.state.replica
    try:
        async with asyncio.timeout(10):
            while await _link_node(app, agent.device_id) != gateway.node:
                await asyncio.sleep(0.05)
        async with app.state.sessionmaker() as db, db.begin():  # what a late heartbeat leaves
            stale = utcnow() - timedelta(minutes=5)
            await db.execute(
                update(Replica).where(Replica.id == replica.id).values(heartbeat_at=stale)
            )
        async with app.state.sessionmaker() as db, db.begin():  # the lease holder's pass
            assert await expire_dead(db, replica.lease) == 1
        assert await _link_node(app, agent.device_id) is None
        await replica.beat()
        async with asyncio.timeout(10):  # presence is written in batches, shortly after
            while await _link_node(app, agent.device_id) != gateway.node:
                await asyncio.sleep(0.05)
    finally:
        await agent.stop()
