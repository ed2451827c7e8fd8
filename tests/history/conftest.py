"""Fixtures for the history and owner-notice tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import Desk, make_desk


@pytest.fixture
async def desk(app: Any) -> Desk:
    return await make_desk(app, unattended_allowed=True)
