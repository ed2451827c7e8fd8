"""``supportbroker audit erase`` and ``audit export`` of an erased ticket (SQLite and
PostgreSQL): the erasure goes through the same flow as the API (refused when nothing was
sealed since), the export says the ticket was erased and sends the third party to the
published key, writing no key beside the bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from audit.bundle import verify_bundle
from audit.checkpoint import VerifierKey
from broker.cli import main
from broker.config import Settings
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, record_event
from tests.evidence.test_cli import broker_env, in_db

__all__ = ["broker_env"]  # the fixture, shared with tests/evidence/test_cli.py

TICKET = "local:T-1"


async def _events(db: AsyncSession) -> None:
    for i in range(3):
        await record_event(
            db, EventType.ticket_updated, ticket=TICKET, actor=SYSTEM_ACTOR, data={"i": i}
        )


def test_cli_erases_once_and_the_export_says_so(
    broker_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_db(broker_env, _events)
    assert main(["audit", "erase", TICKET, "--reason", "GDPR 9"]) == 0
    out = capsys.readouterr().out
    assert f"erased {TICKET}; erasure recorded in the system stream at position 4" in out
    assert main(["audit", "erase", TICKET, "--reason", "again"]) == 1
    assert "nothing was sealed for it since" in capsys.readouterr().err

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    bundle = out_dir / "T-1.zip"
    code = main(["audit", "export", TICKET, "--out", str(bundle), "--reason", "court order"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"ERASED: {TICKET} was erased" in out
    assert "the log's published verifier key" in out
    assert "never a key that came with the bundle" in out
    assert [p.name for p in out_dir.iterdir()] == ["T-1.zip"]  # no key beside the bundle
    assert main(["audit", "public-key"]) == 0
    key = VerifierKey.parse(capsys.readouterr().out.strip())
    assert key.fingerprint in out
    report = verify_bundle(bundle.read_bytes(), key)
    assert report.ok, report.problem
    assert "ERASED: the ticket's content was erased" in report.verdict()
