"""Fixtures for provider tests: a real MeshCentral on loopback (session scope) and its client."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from broker.providers.meshcentral.provider import MeshCentralProvider
from broker.providers.meshcentral.settings import MeshCentralSettings
from tests.providers import meshcentral_server as mc

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def meshcentral() -> Iterator[mc.MeshServer]:
    """MeshCentral 1.1.55 from npm on a free loopback port, for the whole test run."""
    missing = mc.node_missing()
    if missing is not None:
        if IN_CI:
            pytest.fail(f"{missing}; in CI the MeshCentral integration tests are mandatory")
        pytest.skip(f"{missing}: MeshCentral integration tests need Node.js and npm")
    base = mc.cache_dir().parent / "runs"
    server = mc.prepare(base)
    try:
        yield mc.start(server)
    finally:
        mc.stop(server)
        shutil.rmtree(server.directory, ignore_errors=True)


def mc_settings(server: mc.MeshServer, **extra: object) -> MeshCentralSettings:
    values: dict[str, object] = {
        "url": server.url,
        "username": mc.ADMIN_USER,
        "login_key": SecretStr(server.login_key_hex),
    }
    values.update(extra)
    return MeshCentralSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def mesh(meshcentral: mc.MeshServer) -> AsyncIterator[MeshCentralProvider]:
    provider = MeshCentralProvider(mc_settings(meshcentral))
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
def mesh_dir(meshcentral: mc.MeshServer) -> Path:
    return meshcentral.directory
