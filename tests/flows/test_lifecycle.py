"""The session lifecycle's after-commit work, on SQLite and PostgreSQL: what a commit owes is
paid after it, and what a crash left unpaid is paid by the background jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from broker import tasks
from broker.db.base import utcnow
from broker.flows import approval
from broker.gateway.signals import SessionSignals
from broker.providers import registry
from tests.factories import (
    Desk,
    audit_events,
    consent_token,
    make_desk,
    make_device,
    open_session,
    request_session,
    update_session_row,
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


async def types(app: Any) -> list[str]:
    return [t for t, _ in await audit_events(app, REF)]


async def test_an_approval_a_crash_left_without_access_is_granted_by_the_job(
    app: Any,
    client: httpx.AsyncClient,
    desk: Desk,
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await open_session(client, desk)

    async def commit_then_die(db: Any) -> None:
        await db.commit()  # the approval is durable; the work after it never runs

    monkeypatch.setattr(approval, "commit", commit_then_die)
    async with app.state.sessionmaker() as db:
        await approval.decide(
            db,
            consent_token(created),
            approve=True,
            name="Erika",
            answers={},
            ip="198.51.100.10",
            user_agent=None,
        )
    assert fake.prepared == []
    assert await tasks.grant_owed_access(app) == 0  # within the grace: a request may be at it
    await update_session_row(app, created["id"], approved_at=utcnow() - timedelta(minutes=2))
    assert await tasks.grant_owed_access(app) == 1
    assert fake.prepared == [created["id"]]
    story = await types(app)
    assert story.index("consent.decided") < story.index("session.approved")
    assert story.index("session.approved") < story.index("provider.prepared")
    assert await tasks.grant_owed_access(app) == 0  # paid once


async def test_one_wake_up_per_commit_however_many_moves(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    """An unattended request moves twice (awaiting consent, approved) in one commit, then the
    provider's answer commits without a move: the gateway is woken once."""
    signals = SessionSignals()
    signals.attach()
    try:
        seen = signals.version
        response = await request_session(client, desk, unattended=True)
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "approved"
        assert await signals.wait_after(seen, 10)
        assert signals.version == seen + 1
    finally:
        signals.detach()
