"""``python -m audit verify-log`` with a database it cannot read: a one-line message and exit
2, never a traceback; no empty SQLite file left behind; Ctrl-C exits 130 with one line."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from audit import cli, dbverify
from audit.checkpoint import CheckpointSigner

LOG_ID = "audit.test/log"


@pytest.fixture
def key(tmp_path: Path) -> str:
    path = tmp_path / "public.vkey"
    path.write_text(CheckpointSigner.generate(LOG_ID).verifier.encode() + "\n")
    return str(path)


def verify_log(url: str, key: str) -> int:
    return cli.main(["verify-log", "--database-url", url, "--public-key", key])


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_missing_sqlite_file_is_not_created(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.db"
    assert verify_log(f"sqlite+aiosqlite:///{missing}", key) == 2
    assert one_line(capsys.readouterr().err) == f"error: no SQLite database at {missing}"
    assert not missing.exists()


def test_sqlite_file_without_an_audit_log(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert verify_log(f"sqlite+aiosqlite:///{empty}", key) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot read the audit log from sqlite+aiosqlite:///{empty}: ")
    assert "no such table" in line


def test_unreachable_postgres_hides_the_password(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+asyncpg://auditor:s3cret@127.0.0.1:{port}/test"
    assert verify_log(url, key) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: cannot read the audit log from postgresql+asyncpg://auditor:")
    assert "s3cret" not in line


def test_malformed_url(key: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_log("not a url", key) == 2
    assert one_line(capsys.readouterr().err).startswith("error: not a database URL")


def test_ctrl_c_is_one_line(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log.db"
    db.write_bytes(b"")

    async def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(dbverify, "verify_database", interrupted)
    monkeypatch.setattr("audit.store.verify_database", interrupted)
    assert verify_log(f"sqlite+aiosqlite:///{db}", key) == 130
    assert one_line(capsys.readouterr().err) == "interrupted"
