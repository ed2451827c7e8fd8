"""What schemathesis found on PostgreSQL (tests/test_openapi_fuzz.py), kept as plain tests on
both databases: input PostgreSQL cannot store is refused with 422, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import bearer, make_token, make_user


@pytest.fixture
async def admin(app: Any) -> dict[str, str]:
    user, _ = await make_user(app, "admin")
    return bearer(await make_token(app, user))


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/tickets", "/api/v1/devices"])
async def test_an_offset_past_64_bits_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    response = await client.get(path, params={"offset": 2**70}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    fine = await client.get(path, params={"offset": 2**31 - 1}, headers=admin)
    assert fine.status_code == 200, fine.text


async def test_an_enrollment_group_with_a_nul_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/agent/enrollment-tokens", json={"group": "front\x00office"}, headers=admin
    )
    assert response.status_code == 422, response.text
    assert "control characters" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices?group_id=front%00office",
        "/api/v1/sessions?device_id=%00",
        "/api/v1/tickets/local/HD%0047",
    ],
)
async def test_a_nul_in_the_address_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "invalid_request",
        "detail": "NUL characters are not allowed",
    }
