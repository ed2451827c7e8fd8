"""Fixtures for the agent's unit tests: a fake broker on loopback (real asyncssh)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.agent.loopback import FakeBroker


@pytest.fixture
async def fake_broker() -> AsyncIterator[FakeBroker]:
    broker = FakeBroker()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
