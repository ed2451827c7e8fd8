"""The broker's key is pinned at enrollment: any other key stops the agent for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.errors import HostKeyMismatchError
from agent.identity import fingerprint, load_or_create_key
from agent.runner import RunHandle, run
from agent.server import AgentCore
from tests.agent.loopback import FakeBroker, Prompter, enroll_locally, running_agent, settings_for


async def test_run_refuses_a_broker_with_another_key(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path)
    pinned = fingerprint(FakeBroker().key)  # what enrollment pinned: not this broker's key
    enroll_locally(settings, fake_broker.port, pinned)
    core = AgentCore(load_or_create_key(settings.key_path), Prompter(), pinned=pinned)
    handle = RunHandle(core, asyncio.Event())
    with pytest.raises(HostKeyMismatchError) as refused:
        await asyncio.wait_for(run(settings, Prompter(), handle), 15)
    assert fake_broker.fingerprint in str(refused.value)
    assert pinned in str(refused.value)
    assert not handle.connected.is_set()
    assert core.mismatch == fake_broker.fingerprint


async def test_run_connects_to_the_pinned_broker(tmp_path: Path, fake_broker: FakeBroker) -> None:
    settings = settings_for(tmp_path)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    async with running_agent(settings, Prompter(), fake_broker.fingerprint) as core:
        link = await fake_broker.link({})
        assert link.hello["type"] == "hello"
        await asyncio.wait_for(asyncio.shield(core.welcome), 10)
        assert core.mismatch is None


async def test_agent_reconnects_after_the_broker_drops_it(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    async with running_agent(settings, Prompter(), fake_broker.fingerprint):
        first = await fake_broker.link({})
        first.conn.close()
        second = await fake_broker.link({})  # the back-off loop dialled again
        assert second.hello["device_id"] == "dev-1"
