"""Fixtures of the authorization matrix: one migrated database, app and world per module
and database (SQLite and PostgreSQL), shared by every cell of the module.

The app runs with its SSH gateway on a free loopback port (terminal tickets and recordings
need it), a concurrency limit high enough for the sessions the cells open and revoke again,
and a webhook connector for system A's inbound hooks.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from broker.app import create_app
from broker.config import Settings
from broker.connectors import registry as registry_mod
from broker.connectors.registry import ConnectorRegistry
from tests.authz.world import HOOK_SECRET, HOOK_SYSTEM, World, build_world
from tests.conftest import _off_loop, _truncate_pg
from tests.factories import CHEAP_PASSWORD_HASH


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def authz_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> str:
    """A migrated, empty database for the whole module (sync: PostgreSQL is built off-loop)."""
    if request.param == "sqlite":
        target = tmp_path_factory.mktemp("authz-db") / "broker.db"
        shutil.copy(sqlite_template, target)
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("pg_url")
    _off_loop(asyncio.run, _truncate_pg(url))
    return url


def _hook_registry(base_url: str) -> ConnectorRegistry:
    entry: dict[str, Any] = {
        "kind": "webhook",
        "base_url": "https://hookdesk.example",
        "url": "https://hookdesk.example/hook",
        "lookup_url": "/tickets/{external_id}",
        "secret": "outbound-" + HOOK_SECRET,
        "webhook_secret": HOOK_SECRET,
    }
    return ConnectorRegistry({HOOK_SYSTEM: entry}, broker_url=base_url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    authz_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    data = tmp_path_factory.mktemp("authz-data")
    settings = Settings(
        environment="test",
        database_url=authz_db_url,
        data_dir=data,
        secret_key=SecretStr("test-secret-key-" + "x" * 16),
        sweep_interval_seconds=3600.0,
        gateway_enabled=True,
        gateway_port=0,
        max_concurrent_sessions=100,
        log_format="console",
        **CHEAP_PASSWORD_HASH,
    )
    registry = _hook_registry(settings.base_url)
    registry_mod.install(registry)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            built = await build_world(app)
            try:
                yield built
            finally:
                await built.aclose()
    finally:
        await registry.aclose()
        registry_mod.install(None)
    if authz_db_url.startswith("postgresql"):
        await _truncate_pg(authz_db_url)
