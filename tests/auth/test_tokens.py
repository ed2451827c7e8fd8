"""API tokens through the API: create (secret once), list, revoke, and their use."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from broker.auth.models import ApiToken, User
from broker.auth.repository import ApiTokenRepository
from broker.auth.secrets import token_hash
from broker.db.base import utcnow
from tests.auth.conftest import Caller, assert_error, count_rows, system_events
from tests.factories import bearer, make_token, make_user

TOKENS = "/api/v1/tokens"


async def _create(client: httpx.AsyncClient, admin: Caller, **body: Any) -> dict[str, Any]:
    response = await client.post(TOKENS, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_shows_the_secret_once_and_stores_its_hash(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    created = await _create(
        client,
        admin,
        name="ci runner",
        owner_id=tech.user.id,
        scopes=["sessions:read"],
        expires_in_days=30,
    )
    secret = created["secret"]
    assert secret.startswith("sbt_")
    assert created["prefix"] == secret[:10]
    assert created["owner_id"] == tech.user.id
    assert created["scopes"] == ["sessions:read"]
    acting = (await client.get("/api/v1/auth/me", headers=admin.headers)).json()["token_id"]
    assert created["created_by"] == acting  # the admin's own token did it
    assert created["expires_at"] is not None
    listed = await client.get(TOKENS, headers=admin.headers)
    assert created["id"] in [t["id"] for t in listed.json()["items"]]
    assert secret not in listed.text
    assert "secret" not in listed.json()["items"][0]
    async with app.state.sessionmaker() as db:
        row = await ApiTokenRepository(db).get(created["id"])
        assert row is not None
        assert row.token_hash == token_hash(secret)
        assert secret not in str([getattr(row, c.key) for c in ApiToken.__table__.columns])
    events = [p["data"] for _, p in await system_events(app, "token.created")]
    assert events[-1]["token_id"] == created["id"]
    assert secret not in str(await system_events(app))


async def test_use_is_audited_and_bounded_by_scope(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    created = await _create(
        client, admin, name="reader", owner_id=tech.user.id, scopes=["sessions:read"]
    )
    h = bearer(created["secret"])
    assert (await client.get("/api/v1/sessions", headers=h)).status_code == 200
    used = [p for _, p in await system_events(app, "auth.token_used")]
    assert used[-1]["actor"]["id"] == created["id"]
    assert used[-1]["data"] == {"method": "GET", "path": "/api/v1/sessions"}
    listed = (await client.get(TOKENS, headers=admin.headers)).json()["items"]
    assert next(t for t in listed if t["id"] == created["id"])["last_used_at"] is not None
    # sessions:write is the technician's, but not this token's
    refused = await client.post("/api/v1/sessions", json={}, headers=h)
    assert "sessions:write" in assert_error(refused, 403, "forbidden")
    denied = [p for _, p in await system_events(app, "auth.permission_denied")]
    assert denied[-1]["actor"]["id"] == created["id"]
    assert denied[-1]["data"]["missing"] == ["sessions:write"]


async def test_scopes_beyond_the_owner_role_are_refused(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    before = await count_rows(app, ApiToken)
    body = {"name": "grab", "owner_id": tech.user.id, "scopes": ["sessions:read", "users:admin"]}
    detail = assert_error(await client.post(TOKENS, json=body, headers=admin.headers), 422)
    assert "users:admin" in detail
    assert "technician" in detail
    assert await count_rows(app, ApiToken) == before


async def test_revoke(app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller) -> None:
    created = await _create(
        client, admin, name="short", owner_id=tech.user.id, scopes=["tickets:read"]
    )
    h = bearer(created["secret"])
    assert (await client.get("/api/v1/tickets", headers=h)).status_code == 200
    revoked = await client.delete(f"{TOKENS}/{created['id']}", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert "secret" not in revoked.json()
    refused = await client.get("/api/v1/tickets", headers=h)
    assert "token revoked" in assert_error(refused, 401, "not_authenticated")
    again = await client.delete(f"{TOKENS}/{created['id']}", headers=admin.headers)
    assert "already revoked" in assert_error(again, 409, "conflict")
    assert_error(await client.delete(f"{TOKENS}/no-such-token", headers=admin.headers), 404)
    rejected = [p["data"] for _, p in await system_events(app, "auth.token_rejected")]
    assert rejected == [{"why": "token revoked", "token_id": created["id"]}]
    assert [p["data"]["token_id"] for _, p in await system_events(app, "token.revoked")] == [
        created["id"]
    ]


async def test_expired_and_unknown_tokens_are_refused(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    created = await _create(
        client,
        admin,
        name="soon",
        owner_id=tech.user.id,
        scopes=["tickets:read"],
        expires_in_days=1,
    )
    h = bearer(created["secret"])
    assert (await client.get("/api/v1/tickets", headers=h)).status_code == 200
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(ApiToken)
            .where(ApiToken.id == created["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    assert "token expired" in assert_error(await client.get("/api/v1/tickets", headers=h), 401)
    unknown = await client.get("/api/v1/tickets", headers=bearer("sbt_" + "x" * 43))
    assert "unknown token" in assert_error(unknown, 401)
    malformed = await client.get("/api/v1/tickets", headers={"Authorization": "Basic abc"})
    assert "Bearer" in assert_error(malformed, 401)
    whys = [p["data"]["why"] for _, p in await system_events(app, "auth.token_rejected")]
    assert whys == ["token expired", "unknown token"]


async def test_a_disabled_owner_disables_the_token(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    async with app.state.sessionmaker() as db:
        await db.execute(update(User).where(User.id == tech.user.id).values(is_active=False))
        await db.commit()
    assert "disabled" in assert_error(
        await client.get("/api/v1/tickets", headers=tech.headers), 401
    )
    body = {"name": "new", "owner_id": tech.user.id, "scopes": ["tickets:read"]}
    assert "disabled" in assert_error(
        await client.post(TOKENS, json=body, headers=admin.headers), 422
    )


async def test_system_token_is_limited_to_its_system(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    created = await _create(
        client, admin, name="zammad", system="helpdesk", scopes=["tickets:read", "tickets:write"]
    )
    assert created["owner_id"] is None
    assert created["system"] == "helpdesk"
    h = bearer(created["secret"])
    own = {"system": "helpdesk", "external_id": "HD-1", "subject": "Printer", "requester": "Erika"}
    assert (await client.post("/api/v1/tickets", json=own, headers=h)).status_code == 201
    other = {"system": "jira", "external_id": "OPS-1", "subject": "Other", "requester": "Otto"}
    assert_error(await client.post("/api/v1/tickets", json=other, headers=h), 403, "forbidden")
    assert_error(await client.get("/api/v1/sessions", headers=h), 403, "forbidden")
    assert_error(await client.get("/api/v1/users", headers=h), 403, "forbidden")
    me = (await client.get("/api/v1/auth/me", headers=h)).json()
    assert me["kind"] == "token"
    assert me["ticket_system"] == "helpdesk"
    assert me["user"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "system": "helpdesk", "scopes": ["sessions:read"]},  # beyond a system token
        {"name": "x", "scopes": ["tickets:read"]},  # neither owner nor system
        {"name": "x", "system": "helpdesk", "owner_id": "someone", "scopes": ["tickets:read"]},
        {"name": "x", "system": "helpdesk", "scopes": []},
        {"name": "x", "system": "helpdesk", "scopes": ["tickets:delete"]},
        {"name": "x", "system": "help desk", "scopes": ["tickets:read"]},
        {"name": "x", "system": "helpdesk", "scopes": ["tickets:read"], "expires_in_days": 0},
    ],
)
async def test_create_refusals(
    app: Any, client: httpx.AsyncClient, admin: Caller, body: dict[str, Any]
) -> None:
    before = await count_rows(app, ApiToken)
    assert_error(await client.post(TOKENS, json=body, headers=admin.headers), 422)
    assert await count_rows(app, ApiToken) == before


async def test_unknown_owner_is_not_found(client: httpx.AsyncClient, admin: Caller) -> None:
    body = {"name": "x", "owner_id": "no-such-user", "scopes": ["tickets:read"]}
    assert_error(await client.post(TOKENS, json=body, headers=admin.headers), 404, "not_found")


@pytest.mark.parametrize("role", ["technician", "auditor"])
async def test_only_admins_manage_tokens(
    app: Any, client: httpx.AsyncClient, admin: Caller, role: str
) -> None:
    user, _ = await make_user(app, role)
    h = bearer(await make_token(app, user))
    async with app.state.sessionmaker() as db:
        admin_token = (await ApiTokenRepository(db).list())[0]
    assert_error(await client.get(TOKENS, headers=h), 403, "forbidden")
    body = {"name": "mine", "owner_id": user.id, "scopes": ["tickets:read"]}
    assert_error(await client.post(TOKENS, json=body, headers=h), 403, "forbidden")
    assert_error(await client.delete(f"{TOKENS}/{admin_token.id}", headers=h), 403, "forbidden")
    async with app.state.sessionmaker() as db:
        row = await ApiTokenRepository(db).get(admin_token.id)
        assert row is not None
        assert row.revoked_at is None
    assert await count_rows(app, ApiToken) == 2


async def test_last_used_is_kept_to_the_minute(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    """A use within a minute of the last one does not rewrite the token's row; a later
    use does (the row is not every request's write)."""
    created = await _create(
        client, admin, name="counter", owner_id=tech.user.id, scopes=["sessions:read"]
    )
    h = bearer(created["secret"])

    async def last_used() -> Any:
        async with app.state.sessionmaker() as db:
            row = await ApiTokenRepository(db).get(created["id"])
            assert row is not None
            return row.last_used_at

    assert (await client.get("/api/v1/sessions", headers=h)).status_code == 200
    first = await last_used()
    assert first is not None
    assert (await client.get("/api/v1/sessions", headers=h)).status_code == 200
    assert await last_used() == first
    stale = first - timedelta(minutes=2)
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ApiToken).where(ApiToken.id == created["id"]).values(last_used_at=stale)
        )
    assert (await client.get("/api/v1/sessions", headers=h)).status_code == 200
    assert await last_used() > first
