"""``supportbroker`` itself: ``migrate``, usage errors, and a database that is missing, not
migrated or unreachable: one line on stderr, a non-zero exit, never a traceback.

The domain commands (user, token, device, session) are tested beside their domains.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.cli import main
from broker.db.engine import create_engine
from broker.db.migrate import current_revisions, head_revisions


@pytest.fixture
def fresh_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An environment pointing at a database file that does not exist yet."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'cli.db'}"
    monkeypatch.setenv("SUPPORTBROKER_DATABASE_URL", url)
    monkeypatch.setenv("SUPPORTBROKER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "test")
    monkeypatch.setenv("SUPPORTBROKER_SECRET_KEY", "cli-test-secret-" + "c" * 16)
    return url


async def _revisions(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return await current_revisions(engine)
    finally:
        await engine.dispose()


def test_migrate_creates_and_upgrades(fresh_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.strip() == "database migrated to head"
    assert asyncio.run(_revisions(fresh_db)) == head_revisions(fresh_db)
    assert main(["migrate"]) == 0  # idempotent


def test_migrate_to_an_unknown_revision(fresh_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "no-such-revision"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("supportbroker: error: migration:")
    assert "no-such-revision" in err
    assert "Traceback" not in err


def test_a_database_that_is_not_migrated(fresh_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["session", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("supportbroker: error: database error:")
    assert "run `supportbroker migrate`" in err
    assert "Traceback" not in err
    assert "[parameters:" not in err  # the statement and its values stay out


def test_an_unreachable_database(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    monkeypatch.setenv("SUPPORTBROKER_DATABASE_URL", "postgresql+asyncpg://sb@127.0.0.1:1/sb")
    for argv in (["session", "list"], ["user", "create", "eve", "--role", "auditor"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("supportbroker: error: database unreachable:"), err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [[], ["fly"], ["migrate", "a", "b"], ["serve", "--port", "http"], ["session", "list", "-x"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: supportbroker" in err
    assert "Traceback" not in err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "migrate", "user", "token", "device", "session"):
        assert command in out
