"""Cause before effect in the sealed log, on SQLite and PostgreSQL.

The end user's decision is sealed before the approval it causes, and the approval before
the provider access it causes: ``consent.decided`` → ``session.approved`` →
``provider.prepared``, read back from the log in position order (the order the records were
sealed in). The same holds for an unattended request (the policy's decision first), a
denial, a provider that cannot grant, and a consent code paused by wrong codes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from broker.providers import registry
from tests.factories import (
    Desk,
    consent_token,
    make_desk,
    make_device,
    open_session,
    request_session,
)
from tests.providers.fakes import FakeProvider

REF = "helpdesk:HD-4711"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider()
    registry.install("fake", provider)
    yield provider
    await registry.reset()


@pytest.fixture
async def desk(app: Any, fake: FakeProvider) -> Desk:
    desk = await make_desk(app, unattended_allowed=True)
    desk.device = await make_device(app, desk.group, provider="fake", provider_device_id="n-1")
    return desk


async def sealed(app: Any, stream: str = REF) -> list[str]:
    """The stream's event types in the order the log sealed them (by log position)."""
    async with app.state.sessionmaker() as db:
        records = await app.state.audit_log.read_stream(await db.connection(), stream)
    positions = [r.position for r in records]
    assert positions == sorted(positions)
    return [r.event_type for r in records]


def in_order(story: list[str], *expected: str) -> bool:
    """``expected`` appear in ``story`` in this order (others may come between)."""
    found = [story.index(name) for name in expected]
    return found == sorted(found)


async def decide(client: httpx.AsyncClient, created: dict[str, Any], decision: str) -> None:
    response = await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": decision, "name": "Erika"},
    )
    assert response.status_code == 200, response.text


async def test_consent_then_approval_then_provider(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    created = await open_session(client, desk)
    await decide(client, created, "approve")
    story = await sealed(app)
    assert story[-3:] == ["consent.decided", "session.approved", "provider.prepared"]
    assert in_order(story, "session.requested", "consent.requested", "consent.decided")
    assert fake.prepared == [created["id"]]


async def test_unattended_policy_decides_before_the_approval(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    response = await request_session(client, desk, unattended=True)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "approved"
    story = await sealed(app)
    assert story[-3:] == ["consent.decided", "session.approved", "provider.prepared"]


async def test_a_denial_is_decided_before_the_session_moves(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    await decide(client, await open_session(client, desk), "deny")
    assert (await sealed(app))[-2:] == ["consent.decided", "session.denied"]
    assert fake.prepared == []


async def test_a_provider_that_cannot_grant_fails_after_the_approval(
    app: Any, client: httpx.AsyncClient, desk: Desk, fake: FakeProvider
) -> None:
    fake.down = True
    await decide(client, await open_session(client, desk), "approve")
    assert (await sealed(app))[-4:] == [
        "consent.decided",
        "session.approved",
        "provider.prepare_failed",
        "session.failed",
    ]


async def test_wrong_codes_pause_the_code_and_never_fail_the_session(
    app: Any, client: httpx.AsyncClient, desk: Desk, settings: Any
) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    lookup, secret = code.rsplit("-", 1)
    wrong = f"{lookup}-{(int(secret[0]) + 1) % 10}{secret[1:]}"  # the right request, wrong secret
    for _ in range(settings.consent_max_attempts):
        response = await client.post("/api/v1/consent/lookup", json={"code": wrong})
        assert response.status_code == 404, response.text
    assert (await sealed(app))[-1] == "consent.code_paused"
    assert "session.failed" not in await sealed(app)
    rejected = await sealed(app, "_system")
    assert rejected.count("consent.code_rejected") == settings.consent_max_attempts
