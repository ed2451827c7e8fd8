"""Code guessing: per-client back-off (the 6th attempt is refused even with the right code),
uniform errors, single-use decisions, and the audit trail of all of it. Guessing from many
addresses, the per-code back-off and the technician's view: tests/consent/test_guessing.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.factories import Desk, audit_events, consent_token, open_session

SYSTEM_STREAM = "_system"


@asynccontextmanager
async def from_ip(app: Any, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as c:
        yield c


async def lookup(client: httpx.AsyncClient, code: str) -> httpx.Response:
    return await client.post("/api/v1/consent/lookup", json={"code": code})


def wrong_secret(code: str) -> str:
    lookup_part, secret = code.split("-")
    return f"{lookup_part}-{(int(secret) + 1) % 1_000_000:06d}"


def unknown_lookup(code: str) -> str:
    lookup_part, secret = code.split("-")
    return f"{(int(lookup_part) + 1) % 10_000:04d}-{secret}"


async def test_right_code_gives_the_link(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    for spelling in (
        code,
        code.replace("-", " "),
        code.replace("-", ""),
        f" {code[:2]} {code[2:]} ",
    ):
        response = await lookup(client, spelling)
        assert response.status_code == 200, (spelling, response.text)
        assert response.json()["token"] == consent_token(created)
        assert response.json()["url"] == created["consent"]["url"]


async def test_sixth_attempt_refused_even_with_right_code(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    async with from_ip(app, "203.0.113.66") as attacker:
        for n in range(5):
            guess = f"{(int(code[:4]) + 1 + n) % 10_000:04d}-123456"
            wrong = await lookup(attacker, guess)
            assert wrong.status_code == 404, wrong.text
        sixth = await lookup(attacker, code)
        assert sixth.status_code == 429, sixth.text
        assert 1 <= int(sixth.headers["retry-after"]) <= 60
        assert sixth.json()["error"] == "rate_limited"
        assert "try again" in sixth.json()["detail"]
    # Another client is not affected, and the code itself still works.
    async with from_ip(app, "203.0.113.77") as other:
        assert (await lookup(other, code)).status_code == 200
    events = await audit_events(app, SYSTEM_STREAM)
    lockouts = [p for t, p in events if t == "consent.lockout"]
    assert len(lockouts) == 1
    assert lockouts[0]["data"]["scope"] == "client"
    assert lockouts[0]["actor"]["ip"] == "203.0.113.66"
    assert [t for t, _ in events].count("consent.code_rejected") == 5
    # Tokens and codes are never written to the audit payloads.
    assert code not in repr(events)
    assert consent_token(created) not in repr(events)


async def test_lockout_expires(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from broker.consent.models import ConsentClientThrottle
    from broker.db.base import utcnow

    created = await open_session(client, desk)
    code = created["consent"]["code"]
    for _ in range(5):
        await lookup(client, unknown_lookup(code))
    assert (await lookup(client, code)).status_code == 429
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(ConsentClientThrottle).values(locked_until=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    assert (await lookup(client, code)).status_code == 200


async def test_wrong_secret_and_unknown_lookup_look_the_same(
    client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    code = created["consent"]["code"]
    a = await lookup(client, wrong_secret(code))
    b = await lookup(client, unknown_lookup(code))
    c = await lookup(client, "12")
    assert a.status_code == b.status_code == c.status_code == 404
    assert a.json() == b.json() == c.json()


async def test_decided_token_cannot_be_reused(client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    url = f"/api/v1/consent/{consent_token(created)}/decision"
    first = await client.post(url, json={"decision": "approve", "name": "Erika"})
    assert first.status_code == 200
    for decision in ("approve", "deny"):
        again = await client.post(url, json={"decision": decision, "name": "Mallory"})
        assert again.status_code == 409
        assert "already decided" in again.json()["detail"]
    # The code is freed once decided: looking it up now fails like any wrong code.
    assert (await lookup(client, created["consent"]["code"])).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"code": "x" * 41},
        {"code": 4821093375},
        {"code": "4821-093375", "extra": 1},
        {},
    ],
)
async def test_lookup_bad_input(app: Any, client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/api/v1/consent/lookup", json=body)
    assert response.status_code == 422
    assert set(response.json()) == {"error", "detail"}
