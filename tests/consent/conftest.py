"""Fixtures for the consent tests; the page router is mounted if the app does not yet."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import Desk, make_desk


@pytest.fixture
async def desk(app: Any) -> Desk:
    return await make_desk(app)


@pytest.fixture
def pages(app: Any) -> Any:
    from starlette.routing import NoMatchFound

    try:
        app.url_path_for("enter_code")
    except NoMatchFound:
        from broker.consent.pages import router

        app.include_router(router)
    return app


@pytest.fixture(autouse=True)
def _pg_built_outside_the_loop(request: pytest.FixtureRequest) -> None:
    """Build the session's PostgreSQL database before any event loop runs.

    ``db_url`` (async) asks for ``pg_url`` lazily, and ``pg_url`` uses ``asyncio.run``, which
    cannot run inside the test's loop; asking here, synchronously, caches it first.
    """
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("db_url") == "postgresql":
        request.getfixturevalue("pg_url")
