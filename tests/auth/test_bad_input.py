"""Malformed, oversized and unexpected input to the auth routes: 4xx ``{"error","detail"}``,
and nothing written (no user, token, browser session or audit event)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.auth.conftest import Caller, assert_error, snapshot

LOGIN = "/api/v1/auth/login"

LOGIN_BODIES = [
    {"username": "root"},  # no password
    {"username": "root", "password": "x", "remember": True},  # unknown field
    {"username": 42, "password": "x"},  # wrong type
    {"username": ["root"], "password": "x"},
    {"username": "root", "password": None},
    {"username": "", "password": "x"},
    {"username": "ro\x00ot", "password": "x"},  # control characters
    {"username": "root\n", "password": "x"},
    {"username": "r" * 201, "password": "x"},  # oversized fields
    {"username": "root", "password": "p" * 1001},
    {"username": "root", "password": "x", "totp_code": "1" * 21},
]


@pytest.mark.parametrize("body", LOGIN_BODIES)
async def test_bad_login_bodies(
    app: Any, client: httpx.AsyncClient, admin: Caller, body: dict[str, Any]
) -> None:
    before = await snapshot(app)
    response = await client.post(LOGIN, json=body)
    assert_error(response, 422, "invalid_request")
    assert "set-cookie" not in response.headers
    assert await snapshot(app) == before


async def test_malformed_and_oversized_bodies(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    before = await snapshot(app)
    h = {**admin.headers, "content-type": "application/json"}
    for url in (LOGIN, "/api/v1/users", "/api/v1/tokens"):
        assert_error(await client.post(url, content=b'{"username": ', headers=h), 422)
        assert_error(await client.post(url, content=b"[1, 2]", headers=h), 422)
        assert_error(await client.post(url, content=b"", headers=h), 422)
        huge = b'{"username": "' + b"a" * 1_100_000 + b'"}'
        assert_error(await client.post(url, content=huge, headers=h), 413, "payload_too_large")
    assert await snapshot(app) == before


USER_BODIES = [
    {"username": "eve", "role": "technician", "is_admin": True},
    {"username": "eve", "role": "technician", "password": "chosen-by-me"},
    {"username": "eve", "role": 1},
    {"username": "eve", "role": "technician", "max_concurrent_sessions": "3"},
    {"username": "eve", "role": "technician", "max_concurrent_sessions": 0},
    {"username": "eve", "role": "technician", "max_concurrent_sessions": 3.5},
    {"username": "eve", "role": "technician", "display_name": "Eve\u202eevil"},
    {"username": "eve", "role": "technician", "display_name": "Eve\tE"},
    {"username": "eve", "role": "technician", "display_name": "   "},
    {"username": "eve", "role": "technician", "display_name": "E" * 201},
    {"username": "eve", "role": "technician", "email": "not-an-email"},
    {"username": "eve\x07", "role": "technician"},
    {"username": "e" * 65, "role": "technician"},
    {"username": "Eve", "role": "technician"},
]


@pytest.mark.parametrize("body", USER_BODIES)
async def test_bad_user_bodies(
    app: Any, client: httpx.AsyncClient, admin: Caller, body: dict[str, Any]
) -> None:
    before = await snapshot(app)
    assert_error(await client.post("/api/v1/users", json=body, headers=admin.headers), 422)
    assert await snapshot(app) == before


PATCHES = [
    {"is_active": "false"},
    {"is_active": 0},
    {"role": None},
    {"is_active": None},
    {"password_hash": "x"},
    {"must_change_password": False},
    {"display_name": "line\nbreak"},
    {"max_concurrent_sessions": 101},
]


@pytest.mark.parametrize("body", PATCHES)
async def test_bad_user_patches(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller, body: dict[str, Any]
) -> None:
    before = await snapshot(app)
    url = f"/api/v1/users/{tech.user.id}"
    assert_error(await client.patch(url, json=body, headers=admin.headers), 422)
    assert await snapshot(app) == before
    assert (await client.get(url, headers=admin.headers)).json()["is_active"] is True


TOKEN_BODIES = [
    {"name": "t", "system": "helpdesk", "scopes": ["tickets:read"], "secret": "mine"},
    {"name": "t", "system": "helpdesk", "scopes": "tickets:read"},
    {"name": "t", "system": "helpdesk", "scopes": ["tickets:read"], "expires_in_days": "7"},
    {"name": "t", "system": "helpdesk", "scopes": ["tickets:read"], "expires_in_days": 3651},
    {"name": "t\r\n", "system": "helpdesk", "scopes": ["tickets:read"]},
    {"name": "", "system": "helpdesk", "scopes": ["tickets:read"]},
    {"name": "n" * 101, "system": "helpdesk", "scopes": ["tickets:read"]},
    {"name": "t", "system": "s" * 51, "scopes": ["tickets:read"]},
    {"name": "t", "system": "helpdesk", "scopes": ["tickets:read"] * 20},
    {"name": "t", "owner_id": "u" * 37, "scopes": ["tickets:read"]},
]


@pytest.mark.parametrize("body", TOKEN_BODIES)
async def test_bad_token_bodies(
    app: Any, client: httpx.AsyncClient, admin: Caller, body: dict[str, Any]
) -> None:
    before = await snapshot(app)
    assert_error(await client.post("/api/v1/tokens", json=body, headers=admin.headers), 422)
    assert await snapshot(app) == before


async def test_oversized_path_ids(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    before = await snapshot(app)
    long_id = "x" * 37
    h = admin.headers
    assert_error(await client.get(f"/api/v1/users/{long_id}", headers=h), 422)
    assert_error(await client.patch(f"/api/v1/users/{long_id}", json={}, headers=h), 422)
    assert_error(await client.post(f"/api/v1/users/{long_id}/reset-password", headers=h), 422)
    assert_error(await client.delete(f"/api/v1/tokens/{long_id}", headers=h), 422)
    # Refused before the route ran: even the token-use audit events were rolled back.
    assert await snapshot(app) == before
