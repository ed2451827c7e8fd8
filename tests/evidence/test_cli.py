"""``supportbroker audit verify-log [--processes N]`` on the broker's own database (SQLite and
PostgreSQL): worker processes give the same verdict and progress bar as one process, on an
untouched log and on one changed by hand; a bad process count is a usage error."""

from __future__ import annotations

import argparse
import asyncio

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from audit import schema
from audit.dbverify import verify_database
from broker.cli import main, run_in_transaction
from broker.config import Settings
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, record_event

EVENTS = 30


@pytest.fixture
def broker_env(broker_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """tests/conftest.py's environment; segments of 8 records, so a small log is verified
    by the workers."""
    monkeypatch.setitem(verify_database.__kwdefaults__, "segment", 8)
    return broker_env


def in_db(settings: Settings, fn: object) -> None:
    async def handler(db: AsyncSession, _: argparse.Namespace) -> int:
        await fn(db)  # type: ignore[operator]
        return 0

    asyncio.run(run_in_transaction(settings, handler, argparse.Namespace()))


async def _events(db: AsyncSession) -> None:
    for i in range(EVENTS):
        await record_event(
            db,
            EventType.ticket_updated,
            ticket=f"local:T-{i % 3}",
            actor=SYSTEM_ACTOR,
            data={"i": i},
        )


def verify(processes: str | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    extra = [] if processes is None else ["--processes", processes]
    code = main(["audit", "verify-log", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_processes_give_the_same_verdict(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    in_db(broker_env, _events)
    one = verify(None, capsys)
    two = verify("2", capsys)
    assert one[0] == two[0] == 0
    assert one[1] == two[1]
    assert one[1].startswith(f"OK: {EVENTS} records in 3 streams")
    assert f"{EVENTS}/{EVENTS} records" in one[2]
    assert f"{EVENTS}/{EVENTS} records" in two[2]
    assert f"8/{EVENTS} records" in two[2]  # the bar moves per segment

    async def tamper(db: AsyncSession) -> None:
        records = schema.records
        await db.execute(update(records).where(records.c.position == 13).values(event_type="x"))

    in_db(broker_env, tamper)
    one = verify("1", capsys)
    two = verify("2", capsys)
    assert one[0] == two[0] == 1
    assert one[1] == two[1]
    assert one[1].startswith("FAILED:")
    assert "position 13" in one[1]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_bad_process_counts_are_usage_errors(
    broker_env: Settings, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audit", "verify-log", "--processes", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: supportbroker audit verify-log" in err
    assert "argument --processes" in err
    assert "Traceback" not in err
