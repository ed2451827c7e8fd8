"""Guessing a consent code from many addresses: the attacker is slowed (429 + Retry-After,
growing back-off per code and per source) but never ends the session, never locks the link,
and gets only a handful of guesses at the secret; the technician sees it; the refusals are
recorded one per source and minute, with a count.

The addresses arrive the way a deployment behind a reverse proxy sees them: from the
trusted proxy, in X-Forwarded-For.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from broker.consent.models import ConsentClientThrottle, ConsentRequest
from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.evidence import refusals
from tests.factories import Desk, audit_events, consent_token, open_session
from tests.ui.browsers import browser

PROXY = "10.0.0.1"
TICKET_STREAM = "helpdesk:HD-4711"
MAX_ATTEMPTS = 5  # the default consent_max_attempts
BACKOFF = 60  # the default consent_backoff_seconds


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"trusted_proxies": [PROXY]}


@asynccontextmanager
async def proxied(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Requests as the reverse proxy forwards them."""
    transport = httpx.ASGITransport(app=app, client=(PROXY, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as c:
        yield c


async def lookup(proxy: httpx.AsyncClient, code: str, source: str) -> httpx.Response:
    # A client may send a forged X-Forwarded-For of its own: the proxy appends the real peer.
    forwarded = f"192.0.2.250, {source}"
    return await proxy.post(
        "/api/v1/consent/lookup", json={"code": code}, headers={"X-Forwarded-For": forwarded}
    )


def wrong_secret(code: str, n: int = 1) -> str:
    lookup_part, secret = code.split("-")
    return f"{lookup_part}-{(int(secret) + n) % 1_000_000:06d}"


async def end_pause(app: Any) -> None:
    """Let the code's wait run out (as time passing would)."""
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(ConsentRequest).values(paused_until=utcnow() - timedelta(seconds=1))
        )
        await db.commit()


async def consent_request(app: Any) -> ConsentRequest:
    async with app.state.sessionmaker() as db:
        request = await db.scalar(select(ConsentRequest))
        assert request is not None
        return request


async def test_guessing_from_many_addresses_never_ends_the_session(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    async with proxied(app) as proxy:
        statuses = []
        for n in range(40):
            response = await lookup(proxy, wrong_secret(code, n + 1), f"203.0.113.{n + 1}")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["error"] == "rate_limited"
        # A handful reach the secret; everyone else waits, whatever their address.
        assert statuses == [404] * MAX_ATTEMPTS + [429] * (40 - MAX_ATTEMPTS)

        # The session still waits for its user, and their link works.
        got = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
        assert got.json()["state"] == "awaiting_consent"
        token = consent_token(created)
        assert (await client.get(f"/api/v1/consent/{token}")).status_code == 200

        # The user's own code waits too (it would otherwise be a free guess), then works.
        user = "198.51.100.44"
        early = await lookup(proxy, code, user)
        assert early.status_code == 429
        assert "use the link" in early.json()["detail"]
        await end_pause(app)
        later = await lookup(proxy, code, user)
        assert later.status_code == 200, later.text
        assert later.json()["token"] == token

    decided = await client.post(
        f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 200, decided.text
    types = [t for t, _ in await audit_events(app, TICKET_STREAM)]
    assert "consent.code_paused" in types
    assert "session.failed" not in types
    assert "consent.locked" not in types
    assert "session.approved" in types


async def test_each_wrong_code_after_a_wait_doubles_the_next_wait(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    waits = []
    async with proxied(app) as proxy:
        for n in range(MAX_ATTEMPTS):
            assert (
                await lookup(proxy, wrong_secret(code, n + 1), f"203.0.113.{n}")
            ).status_code == 404
        for round_ in range(3):
            refused = await lookup(proxy, code, "203.0.113.200")
            assert refused.status_code == 429
            waits.append(int(refused.headers["retry-after"]))
            await end_pause(app)
            guess = await lookup(
                proxy, wrong_secret(code, 100 + round_), f"203.0.113.{50 + round_}"
            )
            assert guess.status_code == 404
    assert waits[0] <= BACKOFF
    assert waits[1] > BACKOFF
    assert waits[2] > 2 * BACKOFF
    assert waits[0] < waits[1] < waits[2]
    request = await consent_request(app)
    assert request.attempts == MAX_ATTEMPTS + 3
    assert request.locked_at is None
    assert request.lookup is not None  # the code still belongs to the request


async def test_a_source_waits_longer_after_each_wrong_code(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    unknown = f"{(int(created['consent']['code'][:4]) + 1) % 10_000:04d}-000000"
    waits = []
    async with proxied(app) as proxy:
        for _ in range(MAX_ATTEMPTS):
            assert (await lookup(proxy, unknown, "203.0.113.9")).status_code == 404
        for _ in range(2):
            refused = await lookup(proxy, unknown, "203.0.113.9")
            assert refused.status_code == 429
            waits.append(int(refused.headers["retry-after"]))
            async with app.state.sessionmaker() as db:
                past = utcnow() - timedelta(seconds=1)
                await db.execute(update(ConsentClientThrottle).values(locked_until=past))
                await db.commit()
            assert (await lookup(proxy, unknown, "203.0.113.9")).status_code == 404
        # Another address is not slowed by this one's guesses.
        assert (await lookup(proxy, created["consent"]["code"], "203.0.113.10")).status_code == 200
    assert waits[0] < waits[1]


async def test_the_technician_sees_the_guessing(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    tech = await browser(app, desk.tech)
    page = await tech.get(f"/ui/sessions/{created['id']}")
    assert page.status_code == 200
    assert 'id="code-guessing"' not in page.text
    async with proxied(app) as proxy:
        for n in range(MAX_ATTEMPTS):
            await lookup(proxy, wrong_secret(code, n + 1), f"203.0.113.{n + 1}")
    status = await tech.get(f"/ui/sessions/{created['id']}/status")
    assert status.status_code == 200
    assert 'id="code-guessing"' in status.text
    assert f"{MAX_ATTEMPTS} wrong code(s)" in status.text
    assert "paused until" in status.text


async def test_refusals_are_recorded_once_per_source_and_minute(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    async with proxied(app) as proxy:
        for n in range(MAX_ATTEMPTS):
            await lookup(proxy, wrong_secret(code, n + 1), "203.0.113.7")
        before = len(await audit_events(app, "_system"))
        for _ in range(30):
            assert (await lookup(proxy, code, "203.0.113.7")).status_code == 429
        for _ in range(4):
            assert (await lookup(proxy, code, "203.0.113.8")).status_code == 429
    during = await audit_events(app, "_system")
    # Not one record per refusal: at most a minute that ended during the loop is sealed.
    assert len(during) - before <= 2
    async with transaction(app.state.sessionmaker) as db:
        sealed = await refusals.record_finished(db, utcnow() + timedelta(minutes=2))
    assert sealed >= 2
    records = [p["data"] for t, p in await audit_events(app, "_system") if t == "security.refused"]
    by_source: dict[str, int] = {}
    for data in records:
        assert data["kind"] == "consent_code"
        by_source[data["source"]] = by_source.get(data["source"], 0) + data["count"]
    assert by_source == {"203.0.113.7": 30, "203.0.113.8": 4}
    assert len(records) <= 4  # one per source and minute (a loop may straddle a minute)
    # Nothing is left to seal twice.
    async with transaction(app.state.sessionmaker) as db:
        assert await refusals.record_finished(db, utcnow() + timedelta(minutes=2)) == 0
