"""Fixtures for the sessions tests: a technician's desk (user, token, group, device)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import Desk, make_desk


@pytest.fixture
async def desk(app: Any) -> Desk:
    return await make_desk(app)


@pytest.fixture(autouse=True)
def _pg_built_outside_the_loop(request: pytest.FixtureRequest) -> None:
    """Build the session's PostgreSQL database before any event loop runs.

    ``db_url`` (async) asks for ``pg_url`` lazily, and ``pg_url`` uses ``asyncio.run``, which
    cannot run inside the test's loop; asking here, synchronously, caches it first.
    """
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("db_url") == "postgresql":
        request.getfixturevalue("pg_url")
