"""The application log: JSON in production and console in development; request id, user,
session and ticket bound to each line; and no secret in it, not even at DEBUG level.

Each test reconfigures logging inside itself so the handlers write to pytest's captured
stderr, and puts the test configuration back afterwards.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn.config
from pydantic import SecretStr

from broker.app import create_app
from broker.config import Settings
from broker.logging import configure_logging, scrub
from tests.factories import Desk, consent_token, login, make_desk, make_user, open_session


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging("console")


def json_lines(err: str) -> list[dict[str, Any]]:
    """Every line of ``err`` that is a JSON object (the log), in order."""
    found = []
    for line in err.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def fresh_settings(tmp_path: Path, environment: str) -> Settings:
    return Settings(
        environment=environment,  # type: ignore[arg-type]
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        data_dir=tmp_path / "data",
        secret_key=SecretStr("logging-test-secret-" + "k" * 16),
    )


def test_production_logs_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_app(fresh_settings(tmp_path, "production"))
    capsys.readouterr()
    structlog.get_logger("broker.test").info("test.happened", count=3)
    logging.getLogger("uvicorn.error").warning("a stdlib line: %s", "rendered")
    entries = json_lines(capsys.readouterr().err)
    assert [e["event"] for e in entries] == ["test.happened", "a stdlib line: rendered"]
    assert entries[0]["count"] == 3
    assert entries[0]["level"] == "info"
    assert entries[0]["timestamp"].endswith("Z")


def test_uvicorn_configured_earlier_still_reaches_the_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn's own logging config (applied by any server started earlier in the process)
    gives its loggers a handler and no propagation; the broker's lines must still be JSON."""
    logging.config.dictConfig(copy.deepcopy(uvicorn.config.LOGGING_CONFIG))
    create_app(fresh_settings(tmp_path, "production"))
    capsys.readouterr()
    logging.getLogger("uvicorn.error").warning("after uvicorn's config: %s", "rendered")
    entries = json_lines(capsys.readouterr().err)
    assert [e["event"] for e in entries] == ["after uvicorn's config: rendered"]


def test_development_logs_for_people(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_app(fresh_settings(tmp_path, "development"))
    capsys.readouterr()
    structlog.get_logger("broker.test").info("test.happened", count=3)
    err = capsys.readouterr().err
    assert "test.happened" in err
    assert "count=3" in err
    assert json_lines(err) == []


async def test_lines_carry_request_user_session_and_ticket(
    app: Any, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    desk: Desk = await make_desk(app)
    created = await open_session(client, desk)
    configure_logging("json")
    capsys.readouterr()
    # Starting a session that awaits consent is refused; the refusal is logged by the
    # error handler, which passes none of these ids itself.
    refused = await client.post(
        f"/api/v1/sessions/{created['id']}/start",
        headers={**desk.headers, "X-Request-Id": "req-42"},
    )
    assert refused.status_code == 409
    entries = [e for e in json_lines(capsys.readouterr().err) if e["event"] == "request.refused"]
    assert len(entries) == 1, entries
    line = entries[0]
    assert line["request_id"] == "req-42"
    assert line["user"] == desk.tech.display_name
    assert line["session_id"] == created["id"]
    assert line["ticket"] == "helpdesk:HD-4711"
    assert line["error"] == "illegal_transition"


async def test_a_ticket_request_binds_the_ticket(
    app: Any, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    auditor, _ = await make_user(app, "auditor")
    from tests.factories import bearer, make_token

    headers = bearer(await make_token(app, auditor))
    configure_logging("json")
    capsys.readouterr()
    missing = await client.get("/api/v1/tickets/helpdesk/HD-0", headers=headers)
    assert missing.status_code == 404
    entries = [e for e in json_lines(capsys.readouterr().err) if e["event"] == "request.refused"]
    assert [e["ticket"] for e in entries] == ["helpdesk:HD-0"]


async def test_no_secret_reaches_the_log_even_at_debug(
    app: Any,
    client: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin, admin_password = await make_user(app, "admin")
    desk: Desk = await make_desk(app)
    configure_logging("json", logging.DEBUG)
    capsys.readouterr()

    secrets_seen = [admin_password, desk.token]
    csrf = await login(client, admin.username, admin_password)
    secrets_seen += [csrf, client.cookies["sb_session"]]
    wrong = await client.post(
        "/api/v1/auth/login", json={"username": admin.username, "password": "Wrong-Guess-987"}
    )
    assert wrong.status_code == 401
    secrets_seen.append("Wrong-Guess-987")
    created = await open_session(client, desk)
    code, token = created["consent"]["code"], consent_token(created)
    secrets_seen += [code, code.replace("-", ""), token]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("192.0.2.50", 1)),
        base_url="http://broker.test",
    ) as end_user:
        found = await end_user.post("/api/v1/consent/lookup", json={"code": code})
        assert found.json()["token"] == token
        assert (await end_user.get(f"/consent/{token}")).status_code == 200
        decided = await end_user.post(
            f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": "Erika"}
        )
        assert decided.status_code == 200
        again = await end_user.post(
            f"/api/v1/consent/{token}/decision", json={"decision": "deny", "name": "Erika"}
        )
        assert again.status_code == 409  # logged as a refusal with its path
    # uvicorn's access line, as it would be written when serving for real.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "192.0.2.50:1", "GET", f"/consent/{token}", "1.1", 200
    )

    err = capsys.readouterr().err
    events = [e["event"] for e in json_lines(err)]
    # The capture saw the actions (so an empty log cannot pass) ...
    assert "auth.logged_in" in events
    assert "session.transition" in events
    assert "request.refused" in events
    assert any("/consent/[redacted]" in e for e in events)
    # ... and no secret appears in any line.
    for secret in secrets_seen:
        assert secret not in err


def test_scrub_keeps_what_is_not_secret() -> None:
    assert scrub("/consent/lookup") == "/consent/lookup"
    assert scrub("/api/v1/sessions?state=active&limit=5") == "/api/v1/sessions?state=active&limit=5"
    assert scrub("/callback?code=s3cr3t&state=s&x=1") == "/callback?code=[redacted]&state=s&x=1"
    # the gateway's one-time WebSocket ticket is a secret; a ticket reference is not
    secret = "Zx0_" + "a" * 39
    assert scrub(f"/api/v1/gateway/forward?ticket={secret}&port=5900") == (
        "/api/v1/gateway/forward?ticket=[redacted]&port=5900"
    )
    assert scrub(f"/api/v1/gateway/terminal?ticket={secret}") == (
        "/api/v1/gateway/terminal?ticket=[redacted]"
    )
    assert scrub("/audit/search?ticket=HD-4711") == "/audit/search?ticket=HD-4711"
