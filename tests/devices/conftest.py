"""Fixtures for the devices tests: an admin, a technician and an auditor with bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from broker.auth.models import User
from tests.factories import bearer, make_token, make_user


@pytest.fixture(autouse=True)
def _pg_built_outside_the_loop(request: pytest.FixtureRequest) -> None:
    """Build the run's PostgreSQL database before any event loop runs (see tests/sessions)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("db_url") == "postgresql":
        request.getfixturevalue("pg_url")


@dataclass
class Caller:
    user: User
    headers: dict[str, str]


async def caller(app: Any, role: str) -> Caller:
    user, _ = await make_user(app, role)
    return Caller(user, bearer(await make_token(app, user)))


@pytest.fixture
async def admin(app: Any) -> Caller:
    return await caller(app, "admin")


@pytest.fixture
async def tech(app: Any) -> Caller:
    return await caller(app, "technician")


@pytest.fixture
async def auditor(app: Any) -> Caller:
    return await caller(app, "auditor")
