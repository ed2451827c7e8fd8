"""``supportbroker audit verify-log`` against the published checkpoints (SQLite and
PostgreSQL): a consistent rollback (the records, the tree state, the stream heads, the data
keys and the checkpoints all put back to an older state together, as a restored backup does)
passes every check the database can make of itself; only a checkpoint published outside it
shows it, from the broker's own publication directory or from ``--published DIR``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import schema
from broker.cli import main
from broker.config import Settings
from broker.evidence.service import audit_log_of, flush_events
from tests.evidence.test_cli import _events, in_db

TABLES = [
    schema.records,
    schema.data_keys,
    schema.stream_heads,
    schema.tree_state,
    schema.tree_nodes,
    schema.checkpoints,
]


async def _sign_and_publish(db: AsyncSession) -> None:
    log = audit_log_of(db)
    await flush_events(db)
    conn = await db.connection()
    assert await log.sign_checkpoint(conn) is not None
    await log.publish(conn)


def _snapshot(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    taken: dict[str, list[dict[str, Any]]] = {}

    async def take(db: AsyncSession) -> None:
        for table in TABLES:
            rows = await db.execute(select(table))
            taken[table.name] = [dict(r._mapping) for r in rows]

    in_db(settings, take)
    return taken


def _restore(settings: Settings, taken: dict[str, list[dict[str, Any]]]) -> None:
    async def put_back(db: AsyncSession) -> None:
        for table in TABLES:
            await db.execute(delete(table))
            if taken[table.name]:
                await db.execute(insert(table), taken[table.name])

    in_db(settings, put_back)


def verify(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify-log", *extra])
    return code, capsys.readouterr().out


def test_a_consistent_rollback_is_caught_by_the_published_checkpoint(
    broker_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_db(broker_env, _events)
    in_db(broker_env, _sign_and_publish)  # published at size 30
    backup = _snapshot(broker_env)
    in_db(broker_env, _events)
    in_db(broker_env, _sign_and_publish)  # published at size 60
    code, out = verify(capsys)
    assert code == 0, out
    assert "consistent with the published checkpoint at size 60" in out

    _restore(broker_env, backup)

    # The database alone cannot tell: every record, chain, checkpoint and the tree agree.
    empty = tmp_path / "nothing-published"
    empty.mkdir()
    code, out = verify(capsys, "--published", str(empty))
    assert code == 0, out
    assert out.startswith("OK: 30 records")
    assert "no published checkpoint: a consistent rollback cannot be detected" in out

    # The broker's own publication directory has the head at 60: caught.
    code, out = verify(capsys)
    assert code == 1, out
    assert out.startswith("FAILED: rolled back: a checkpoint at size 60 was published")

    # A copy of the published checkpoints kept elsewhere catches it too.
    kept = tmp_path / "kept-elsewhere"
    shutil.copytree(broker_env.resolved_publish_dir, kept)
    code, out = verify(capsys, "--published", str(kept))
    assert code == 1, out
    assert "rolled back" in out


def test_a_published_checkpoint_of_another_log_fails(
    broker_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_db(broker_env, _events)
    in_db(broker_env, _sign_and_publish)
    foreign = tmp_path / "foreign.note"
    note = (broker_env.resolved_publish_dir / "latest.note").read_text()
    # The append file's format, with one character of the signed root changed.
    head, _, signature = note.partition("\n\n")
    lines = head.split("\n")
    lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]
    foreign.write_text("\n".join(lines) + "\n\n" + signature + "\n%%\n")
    code, out = verify(capsys, "--published", str(foreign))
    assert code == 1, out
    assert out.startswith("FAILED")


def test_unreadable_published_checkpoints_are_a_message(
    broker_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "latest.note").write_text("not a checkpoint")
    code = main(["audit", "verify-log", "--published", str(bad)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "cannot read the published checkpoints" in err
