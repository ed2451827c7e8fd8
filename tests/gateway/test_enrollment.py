"""Enrollment over the real reverse-SSH gateway: good, reused and expired tokens, key pinning."""

from __future__ import annotations

import asyncio
import stat
from datetime import timedelta
from typing import Any

import asyncssh
import pytest
from sqlalchemy import select, update

from agent.config import load_enrollment
from agent.errors import EnrollmentError, HostKeyMismatchError
from agent.runner import enroll, run
from broker.devices.models import Device
from broker.gateway.models import AgentEnrollmentToken, AgentKey
from tests.gateway.helpers import RunningAgent, ScriptedPrompter, agent_settings, new_token


async def test_good_token_enrolls_and_pins(app: Any, gateway: Any, people: Any, tmp_path: Any):
    settings = agent_settings(tmp_path)
    token = await new_token(app, people["group"].name)
    config = await enroll(settings, f"127.0.0.1:{gateway.port}", token, ScriptedPrompter())
    assert config.broker_fingerprint == gateway.fingerprint
    assert stat.S_IMODE(settings.config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.key_path.stat().st_mode) == 0o600
    async with app.state.sessionmaker() as db:
        device = await db.get(Device, config.device_id)
        key = await db.get(AgentKey, config.device_id)
    assert device is not None
    assert device.provider == "agent"
    assert device.group_id == people["group"].id
    assert key is not None
    device_key = asyncssh.read_private_key(str(settings.key_path))
    assert key.fingerprint == device_key.get_fingerprint("sha256")
    agent = RunningAgent(settings, ScriptedPrompter())
    try:
        await agent.connected(gateway)
        async with asyncio.timeout(10):  # presence is written in batches, shortly after
            while True:
                async with app.state.sessionmaker() as db:
                    key = await db.get(AgentKey, config.device_id)
                assert key is not None
                if key.connected_node == gateway.node:
                    break
                await asyncio.sleep(0.05)
    finally:
        await agent.stop()


async def test_reused_token_is_refused(app: Any, gateway: Any, people: Any, tmp_path: Any):
    token = await new_token(app, people["group"].name)
    await enroll(agent_settings(tmp_path), f"127.0.0.1:{gateway.port}", token, ScriptedPrompter())
    with pytest.raises(EnrollmentError, match="already used"):
        await enroll(
            agent_settings(tmp_path), f"127.0.0.1:{gateway.port}", token, ScriptedPrompter()
        )


async def test_expired_token_is_refused(app: Any, gateway: Any, people: Any, tmp_path: Any):
    token = await new_token(app, people["group"].name)
    async with app.state.sessionmaker() as db:
        row = (await db.scalars(select(AgentEnrollmentToken))).one()
        await db.execute(
            update(AgentEnrollmentToken).values(expires_at=row.expires_at - timedelta(hours=2))
        )
        await db.commit()
    settings = agent_settings(tmp_path)
    with pytest.raises(EnrollmentError, match="expired"):
        await enroll(settings, f"127.0.0.1:{gateway.port}", token, ScriptedPrompter())
    assert not settings.config_path.exists()


async def test_unknown_token_is_refused(gateway: Any, people: Any, tmp_path: Any):
    with pytest.raises(EnrollmentError, match="unknown token"):
        await enroll(
            agent_settings(tmp_path), f"127.0.0.1:{gateway.port}", "sbe_nope", ScriptedPrompter()
        )


async def test_host_key_mismatch_refuses_to_run(app: Any, gateway: Any, people: Any, tmp_path: Any):
    settings = agent_settings(tmp_path)
    token = await new_token(app, people["group"].name)
    await enroll(settings, f"127.0.0.1:{gateway.port}", token, ScriptedPrompter())
    # Pretend the pinned broker key was another one: the real broker must now be refused.
    config = load_enrollment(settings)
    other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
    raw = settings.config_path.read_text().replace(config.broker_fingerprint, other)
    settings.config_path.write_text(raw)
    with pytest.raises(HostKeyMismatchError, match="pinned"):
        await run(settings, ScriptedPrompter())


async def test_enroll_with_wrong_expected_fingerprint(
    app: Any, gateway: Any, people: Any, tmp_path: Any
):
    token = await new_token(app, people["group"].name)
    settings = agent_settings(tmp_path)
    with pytest.raises(HostKeyMismatchError):
        await enroll(
            settings,
            f"127.0.0.1:{gateway.port}",
            token,
            ScriptedPrompter(),
            expect_fingerprint="SHA256:not-the-broker",
        )
    assert not settings.config_path.exists()
