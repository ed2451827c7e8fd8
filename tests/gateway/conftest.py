"""Gateway fixtures: the app with the SSH gateway on a free loopback port, users and a group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.gateway.server import Gateway, start_gateway
from tests.factories import make_group, make_token, make_user


@pytest.fixture
def settings_overrides(tmp_path: Any) -> dict[str, Any]:
    return {"gateway_port": 0}


@pytest.fixture
async def app(settings: Any) -> AsyncIterator[Any]:
    """The app with the gateway router (until the lead includes it in create_app)."""
    from broker.app import create_app
    from broker.gateway.router import router

    application = create_app(settings)
    if not any(getattr(r, "path", "").startswith("/api/v1/gateway") for r in application.routes):
        application.include_router(router, prefix="/api/v1")
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def gateway(app: Any) -> AsyncIterator[Gateway]:
    if getattr(app.state, "gateway", None) is not None:  # the lifespan already started it
        yield app.state.gateway
        return
    stop = await start_gateway(app)
    try:
        yield app.state.gateway
    finally:
        await stop()


@pytest.fixture
async def people(app: Any, tmp_path: Any) -> dict[str, Any]:
    tech, _ = await make_user(app, "technician")
    admin, _ = await make_user(app, "admin")
    allowed = tmp_path / "shared"
    allowed.mkdir()
    group = await make_group(app, [tech], allowed_ports=[], allowed_paths=[str(allowed)])
    return {
        "tech": tech,
        "tech_token": await make_token(app, tech),
        "admin": admin,
        "admin_token": await make_token(app, admin),
        "group": group,
        "allowed": allowed,
    }


@pytest.fixture
def live_url(gateway: Any, live_url: str) -> str:
    """tests/conftest.py's served app, with the gateway running (the terminal's WebSockets)."""
    return live_url
