"""Connector test wiring: a fake help desk behind a ``webhook`` system, installed as the
process-wide registry, and the app with the connector routers mounted (as the lead will)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from broker.app import create_app
from broker.config import Settings
from broker.connectors import registry as registry_mod
from broker.connectors.registry import ConnectorRegistry
from tests.connectors.fakes.webhook import FakeReceiver
from tests.connectors.harness import BROKER_URL, harness

SYSTEM = "helpdesk"


@pytest.fixture(autouse=True)
def _pg_before_the_loop(request: pytest.FixtureRequest) -> None:
    """Build the session's PostgreSQL database from a sync fixture: ``pg_url`` calls
    ``asyncio.run``, which fails when first requested from the async ``db_url``."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("db_url") == "postgresql":
        request.getfixturevalue("pg_url")


@pytest.fixture
def receiver() -> FakeReceiver:
    fake = harness("webhook").fake
    assert isinstance(fake, FakeReceiver)
    return fake


@pytest.fixture
def connector_registry(receiver: FakeReceiver) -> Iterator[ConnectorRegistry]:
    entry = harness("webhook").entry
    registry = ConnectorRegistry(
        {SYSTEM: entry}, broker_url=BROKER_URL, transport=receiver.transport()
    )
    registry_mod.install(registry)
    yield registry
    registry_mod.install(None)


def mount(application: Any) -> Any:
    from broker.connectors.router import link_router, router

    paths = {getattr(r, "path", "") for r in application.routes}
    if "/api/v1/connectors/{system}/webhook" not in paths:
        application.include_router(router, prefix="/api/v1")
    if "/t/{system}/{external_id:path}/connect" not in paths:
        application.include_router(link_router)
    return application


@pytest.fixture
async def app(settings: Settings, connector_registry: ConnectorRegistry) -> AsyncIterator[Any]:
    application = mount(create_app(settings))
    async with application.router.lifespan_context(application):
        yield application
    await connector_registry.aclose()
