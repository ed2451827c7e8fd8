"""Payloads leave only for targets allowed them, and a crypto-erased ticket's records then say
``erased`` instead of carrying content (SQLite and PostgreSQL)."""

from __future__ import annotations

from fastapi import FastAPI

from broker.db.aftercommit import transaction
from broker.evidence.service import SYSTEM_ACTOR, audit_log_of
from broker.siem.format import json_line
from broker.siem.service import read_events
from tests.siem.helpers import write_events


async def test_erased_tickets_export_no_content(app: FastAPI) -> None:
    maker = app.state.sessionmaker
    await write_events(maker, 14)  # tickets local:T-0 .. local:T-6, two records each
    async with transaction(maker) as db:
        log = audit_log_of(db)
        await log.erase_stream(await db.connection(), "local:T-0", actor=SYSTEM_ACTOR.as_payload())

    async with maker() as db:
        full = await read_events(db, audit_log_of(db), 0, 100, payloads=True)
        meta = await read_events(db, audit_log_of(db), 0, 100, payloads=False)
        later = await read_events(db, audit_log_of(db), 10, 3, payloads=False)

    assert [e.position for e in later] == [10, 11, 12]  # from the cursor, at most the batch
    assert all(e.payload is None and not e.erased for e in meta)
    erased = [e for e in full if e.stream == "local:T-0" and e.event_type == "ticket.updated"]
    assert len(erased) == 2
    assert all(e.erased and e.payload is None for e in erased)
    kept = [e for e in full if e.stream == "local:T-1"]
    assert [e.payload["data"]["i"] for e in kept if e.payload] == [1, 8]
    assert b'"erased":true' in json_line(erased[0], log.log_id)
    assert b'"payload"' not in json_line(meta[0], log.log_id)
