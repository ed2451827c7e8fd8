"""``supportbroker user …`` and ``token …`` on a temporary SQLite file: output and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.repository import ApiTokenRepository, UserRepository
from broker.auth.secrets import token_hash, verify_password
from broker.cli import main, run_in_transaction
from broker.config import Settings

# On SQLite only, as the command line is run in these tests (broker_env: tests/conftest.py).
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def in_db(settings: Settings, fn: Any) -> Any:
    result: list[Any] = []

    async def handler(db: AsyncSession, _: argparse.Namespace) -> int:
        result.append(await fn(db))
        return 0

    asyncio.run(run_in_transaction(settings, handler, argparse.Namespace()))
    return result[0]


def events(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    async def fn(db: AsyncSession) -> list[tuple[str, dict[str, Any]]]:
        conn = await db.connection()
        found = await db.info["audit_log"].read_stream(conn, "_system")
        return [(e.event_type, e.payload) for e in found]

    result: list[tuple[str, dict[str, Any]]] = in_db(settings, fn)
    return result


def user_row(settings: Settings, username: str) -> Any:
    async def fn(db: AsyncSession) -> Any:
        return await UserRepository(db).by_username(username)

    return in_db(settings, fn)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_user_create_prints_a_one_time_password(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "user", "create", "erika", "--role", "technician",
        "--display-name", "Erika Mustermann", "--email", "erika@example.test",
    )  # fmt: skip
    assert code == 0, err
    assert "created technician erika" in out
    password = re.search(r"one-time password: (\S+)", out)
    assert password is not None
    row = user_row(broker_env, "erika")
    assert row.display_name == "Erika Mustermann"
    assert row.email == "erika@example.test"
    assert row.must_change_password is True
    assert verify_password(password[1], row.password_hash)
    created = [p for t, p in events(broker_env) if t == "user.created"]
    assert created[0]["actor"]["name"] == "cli"
    assert password[1] not in str(events(broker_env))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["user", "create", "Bad Name", "--role", "auditor"], "USERNAME:"),
        (["user", "create", "ok", "--role", "auditor", "--email", "nope"], "--email:"),
        (
            ["user", "create", "ok", "--role", "auditor", "--display-name", "a\x1bb"],
            "--display-name",
        ),
    ],
)
def test_user_create_refusals(
    broker_env: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("supportbroker: error: ")
    assert message in err
    assert "Traceback" not in err
    assert out == ""
    assert user_row(broker_env, "ok") is None


def test_duplicate_user_and_unknown_role(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "user", "create", "kim", "--role", "auditor")[0] == 0
    code, _, err = run(capsys, "user", "create", "kim", "--role", "admin")
    assert code == 1
    assert "'kim' is taken" in err
    assert user_row(broker_env, "kim").role == "auditor"
    with pytest.raises(SystemExit) as exited:
        main(["user", "create", "lee", "--role", "superuser"])
    assert exited.value.code == 2
    assert "invalid choice: 'superuser'" in capsys.readouterr().err


def test_reset_password_and_list(broker_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "user", "create", "kim", "--role", "auditor")
    first = re.search(r"one-time password: (\S+)", out)
    assert first is not None
    code, out, err = run(capsys, "user", "reset-password", "kim")
    assert code == 0, err
    second = re.search(r"new one-time password for kim: (\S+)", out)
    assert second is not None
    assert second[1] != first[1]
    row = user_row(broker_env, "kim")
    assert verify_password(second[1], row.password_hash)
    assert not verify_password(first[1], row.password_hash)
    code, _, err = run(capsys, "user", "reset-password", "nobody")
    assert code == 1
    assert "no user 'nobody'" in err
    code, out, _ = run(capsys, "user", "list")
    assert code == 0
    assert re.search(r"kim\s+auditor\s+new-pw\s+kim", out)
    assert second[1] not in out
    code, out, _ = run(capsys, "user", "list", "--json")
    assert '"username": "kim"' in out


def test_token_create_for_a_user(broker_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "user", "create", "tina", "--role", "technician")
    code, out, err = run(
        capsys, "token", "create", "--name", "laptop", "--user", "tina",
        "--scope", "sessions:read", "--scope", "tickets:read", "--expires-in-days", "30",
    )  # fmt: skip
    assert code == 0, err
    secret = re.search(r"secret \(shown only now\): (sbt_\S+)", out)
    assert secret is not None
    assert "scopes: sessions:read, tickets:read" in out

    async def fn(db: AsyncSession) -> Any:
        return await ApiTokenRepository(db).by_token_hash(token_hash(secret[1]))

    row = in_db(broker_env, fn)
    assert row is not None
    assert row.owner_id == user_row(broker_env, "tina").id
    assert row.expires_at is not None
    code, out, _ = run(capsys, "token", "list")
    assert code == 0
    assert "laptop" in out
    assert secret[1] not in out
    assert secret[1] not in str(events(broker_env))
    code, out, _ = run(capsys, "token", "revoke", row.id)
    assert code == 0
    assert "revoked token laptop" in out
    code, _, err = run(capsys, "token", "revoke", row.id)
    assert code == 1
    assert "already revoked" in err
    assert re.search(r"laptop\s+sbt_\S+\s+revoked", run(capsys, "token", "list")[1])


def test_token_create_for_a_system(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "token", "create", "--name", "zammad", "--system", "helpdesk",
        "--scope", "tickets:read", "--scope", "tickets:write",
    )  # fmt: skip
    assert code == 0, err
    assert "for ticket system helpdesk" in out
    assert "expires: never" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "tina", "--scope", "users:admin"], "beyond what the role technician"),
        (["--user", "ghost", "--scope", "tickets:read"], "no user 'ghost'"),
        (["--system", "helpdesk", "--scope", "sessions:read"], "beyond what a ticket-system"),
        (["--system", "help desk", "--scope", "tickets:read"], "--system:"),
        (["--user", "tina", "--scope", "tickets:read", "--expires-in-days", "0"], "--expires-in"),
    ],
)
def test_token_create_refusals(
    broker_env: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    run(capsys, "user", "create", "tina", "--role", "technician")
    code, out, err = run(capsys, "token", "create", "--name", "x", *argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert "sbt_" not in out
    assert run(capsys, "token", "list")[1].strip() == "no tokens"


@pytest.mark.parametrize(
    "argv",
    [
        ["--user", "tina", "--system", "helpdesk", "--scope", "tickets:read"],
        ["--scope", "tickets:read"],
        ["--user", "tina"],
        ["--user", "tina", "--scope", "tickets:delete"],
    ],
)
def test_token_create_usage_errors(
    broker_env: Settings, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "create", "--name", "x", *argv])
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err
