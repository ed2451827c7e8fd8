"""Fixtures for the sessions tests: a technician's desk (user, token, group, device)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import Desk, make_desk


@pytest.fixture
async def desk(app: Any) -> Desk:
    return await make_desk(app)
