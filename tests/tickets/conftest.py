"""Fixtures for the tickets tests: bearer headers for each kind of caller."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import bearer, make_token, make_user


@pytest.fixture(autouse=True)
def _pg_built_outside_the_loop(request: pytest.FixtureRequest) -> None:
    """Build the run's PostgreSQL database before any event loop runs (see tests/sessions)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("db_url") == "postgresql":
        request.getfixturevalue("pg_url")


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
