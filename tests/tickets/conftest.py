"""Fixtures for the tickets tests: bearer headers for each kind of caller."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import bearer, make_token, make_user


@pytest.fixture
async def tech(app: Any) -> dict[str, str]:
    user, _ = await make_user(app, "technician")
    return bearer(await make_token(app, user))


@pytest.fixture
async def auditor(app: Any) -> dict[str, str]:
    user, _ = await make_user(app, "auditor")
    return bearer(await make_token(app, user))


@pytest.fixture
async def zammad(app: Any) -> dict[str, str]:
    """A ticket-system token for the system ``zammad``."""
    return bearer(await make_token(app, system="zammad"))
