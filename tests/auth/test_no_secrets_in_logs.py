"""Passwords, one-time passwords, cookies and token secrets never reach the application log."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.auth.conftest import Browser, Caller


async def test_login_and_token_create_log_no_secrets(
    app: Any,
    client: httpx.AsyncClient,
    browser: Browser,
    admin: Caller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets_seen: list[str] = [admin.password]
    caplog.set_level(logging.INFO)  # the level configure_logging() runs the broker at
    with capture_logs() as entries:
        async with browser() as b:
            wrong = await b.post(
                "/api/v1/auth/login", json={"username": "root", "password": "wrong-Guess-123"}
            )
            assert wrong.status_code == 401
            login = await b.post(
                "/api/v1/auth/login", json={"username": "root", "password": admin.password}
            )
            assert login.status_code == 200
            csrf = login.json()["csrf_token"]
            secrets_seen += [csrf, b.cookies["sb_session"], "wrong-Guess-123"]
            h = {"X-CSRF-Token": csrf}
            created = await b.post(
                "/api/v1/users", json={"username": "newbie", "role": "technician"}, headers=h
            )
            assert created.status_code == 201
            user = created.json()["user"]
            secrets_seen.append(created.json()["one_time_password"])
            token = await b.post(
                "/api/v1/tokens",
                json={"name": "ci", "owner_id": user["id"], "scopes": ["tickets:read"]},
                headers=h,
            )
            assert token.status_code == 201
            secrets_seen.append(token.json()["secret"])
            reset = await b.post(f"/api/v1/users/{user['id']}/reset-password", headers=h)
            secrets_seen.append(reset.json()["one_time_password"])
        used = await client.get(
            "/api/v1/tickets", headers={"Authorization": f"Bearer {token.json()['secret']}"}
        )
        assert used.status_code == 200
    events = [e["event"] for e in entries]
    # The log did record these actions (so the capture works) ...
    assert "auth.logged_in" in events
    assert "auth.token_created" in events
    assert "request.refused" in events  # the failed login
    # ... and no secret appears anywhere in any entry, rendered or raw.
    logged = repr(entries) + caplog.text
    for secret in secrets_seen:
        assert secret not in logged
