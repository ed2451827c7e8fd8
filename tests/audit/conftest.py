"""Fixtures of the audit library's tests: keys, a signer, an AuditLog on a real database.

Hypothesis runs the ``ci`` profile (many examples, >= 10,000 over the tampering properties)
when ``CI=true`` and a quick ``dev`` profile otherwise.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit.checkpoint import CheckpointSigner
from audit.keys import LocalFileKeyProvider
from audit.publish import DirectoryPublisher
from audit.store import AuditLog

settings.register_profile(
    "ci", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")

LOG_ID = "audit.test/log"

Begin = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


@pytest.fixture
def keys(tmp_path: Path) -> LocalFileKeyProvider:
    return LocalFileKeyProvider(tmp_path / "keys" / "kek.json")


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner.load_or_create(tmp_path / "keys" / "signing.pem", LOG_ID)


@pytest.fixture
def log(keys: LocalFileKeyProvider, signer: CheckpointSigner, tmp_path: Path) -> AuditLog:
    return AuditLog(
        log_id=LOG_ID,
        keys=keys,
        signer=signer,
        publisher=DirectoryPublisher(tmp_path / "published"),
    )


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    from broker.db.engine import create_engine

    eng = create_engine(db_url)
    yield eng
    await eng.dispose()
