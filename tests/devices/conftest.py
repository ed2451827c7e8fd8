"""Fixtures for the devices tests: an admin, a technician and an auditor with bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from broker.auth.models import User
from tests.factories import bearer, make_token, make_user


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
