"""Erasing a ticket of a connected help desk, on SQLite and PostgreSQL: every plaintext copy of
its personal data goes (tables, API, comments not yet delivered, refused deliveries that
mention it), the bytes are gone from the database files, the erasure record survives a later
erasure, and the rest of the log still verifies."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from broker.connectors.models import OutboxMessage, WebhookReject
from broker.connectors.outbox import deliver_due
from broker.flows.erasure import VACUUM_TABLES
from tests.connectors.conftest import SYSTEM
from tests.connectors.fakes.webhook import FakeReceiver
from tests.connectors.test_webhooks import URL
from tests.factories import audit_events, bearer, consent_token, make_desk, make_token, make_user

TICKET = "4711"
ERASE = f"/api/v1/audit/tickets/{SYSTEM}/{TICKET}/erase"


def markers() -> dict[str, str]:
    """Unique strings, one per field that holds personal data: found anywhere = not erased."""
    fields = ("subject", "requester", "reason", "name", "answer", "reject")
    return {f: f"zq{f}{secrets.token_hex(8)}" for f in fields}


async def ticket_with_personal_data(
    app: Any, client: httpx.AsyncClient, receiver: FakeReceiver, mark: dict[str, str]
) -> dict[str, Any]:
    """A session on the desk's ticket: its request delivered to the desk, its consent (typed
    name, answers) still waiting in the outbox, a refused delivery that mentions the ticket."""
    desk = await make_desk(app, questions=[{"id": "os", "label": "Which system?"}])
    receiver.add(TICKET, subject=mark["subject"], state="open")
    receiver.tickets[TICKET]["requester"] = mark["requester"]
    receiver.tickets[TICKET]["assignee"] = desk.tech.username
    created = await client.post(
        "/api/v1/sessions",
        json={
            "ticket": {"system": SYSTEM, "external_id": TICKET},
            "device_id": desk.device.id,
            "reason": f"printer {mark['reason']} is stuck",
            "capabilities": ["view"],
            "duration_minutes": 30,
        },
        headers=desk.headers,
    )
    assert created.status_code == 201, created.text
    assert await deliver_due(app.state.sessionmaker) >= 1  # the request reached the desk
    decided = await client.post(
        f"/api/v1/consent/{consent_token(created.json())}/decision",
        json={"decision": "approve", "name": mark["name"], "answers": {"os": mark["answer"]}},
    )
    assert decided.status_code == 200, decided.text
    body = json.dumps({"ticket": {"id": TICKET, "requester": mark["reject"]}}).encode()
    refused = await client.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert refused.status_code == 401, refused.text
    admin, _ = await make_user(app, "admin")
    auditor, _ = await make_user(app, "auditor")
    return {
        "desk": desk,
        "consent_page": "/consent/" + consent_token(created.json()),
        "session": created.json()["id"],
        "admin": bearer(await make_token(app, admin)),
        "auditor": bearer(await make_token(app, auditor)),
    }


async def _rows(app: Any, model: Any) -> list[Any]:
    async with app.state.sessionmaker() as db:
        return list((await db.scalars(select(model))).all())


async def test_erasure_covers_every_copy_and_its_record_survives(
    app: Any, client: httpx.AsyncClient, receiver: FakeReceiver
) -> None:
    mark = markers()
    world = await ticket_with_personal_data(app, client, receiver, mark)
    desk, sid = world["desk"], world["session"]
    reads = [
        (world["consent_page"], {}),  # the end user's page: ticket, technician, reason
        ("/api/v1/sessions", desk.headers),
        (f"/api/v1/sessions/{sid}", desk.headers),
        (f"/api/v1/tickets/{SYSTEM}/{TICKET}", desk.headers),
    ]
    before = " ".join([(await client.get(p, headers=h)).text for p, h in reads])
    assert mark["reason"] in before
    assert mark["subject"] in before
    pending = [m for m in await _rows(app, OutboxMessage) if m.delivered_at is None]
    assert any(mark["name"] in m.text + json.dumps(m.data) for m in pending)
    assert any(mark["reject"] in r.body for r in await _rows(app, WebhookReject))

    erased = await client.post(ERASE, json={"reason": "GDPR request 17"}, headers=world["admin"])
    assert erased.status_code == 200, erased.text

    for path, headers in reads:
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        assert not [f for f, m in mark.items() if m in response.text], (path, response.text)
    assert (await client.get(f"/api/v1/sessions/{sid}", headers=desk.headers)).json()[
        "reason"
    ] == "[erased]"
    comments = await _rows(app, OutboxMessage)
    assert comments  # the delivered one stays, blanked; the pending one is dropped
    assert all(m.delivered_at is not None and m.text == "[erased]" for m in comments)
    assert await _rows(app, WebhookReject) == []
    system = [p for t, p in await audit_events(app, "_system") if t == "ticket.erased"]
    assert len(system) == 1
    assert system[0]["stream"] == f"{SYSTEM}:{TICKET}"
    assert system[0]["actor"]["reason"] == "GDPR request 17"
    assert system[0]["dropped_comments"] >= 1
    assert system[0]["deleted_webhook_rejects"] == 1
    verdict = (await client.get("/api/v1/audit/verify", headers=world["auditor"])).json()
    assert verdict["ok"] is True, verdict

    # Nothing sealed since: a second erasure would only shred the first one's record.
    again = await client.post(ERASE, json={"reason": "cover it up"}, headers=world["admin"])
    assert again.status_code == 409, again.text
    assert set(again.json()) == {"error", "detail"}
    assert "nothing was sealed for it since" in again.json()["detail"]
    # A new session on the erased ticket is sealed under a new key; erasing it again is
    # allowed, and the first erasure's record is still readable in the system stream.
    receiver.tickets[TICKET]["subject"] = "new subject"
    renewed = await client.post(
        "/api/v1/sessions",
        json={
            "ticket": {"system": SYSTEM, "external_id": TICKET},
            "device_id": desk.device.id,
            "reason": "printer again",
            "capabilities": ["view"],
            "duration_minutes": 30,
        },
        headers=desk.headers,
    )
    assert renewed.status_code == 201, renewed.text
    second = await client.post(ERASE, json={"reason": "second"}, headers=world["admin"])
    assert second.status_code == 200, second.text
    records = [p for t, p in await audit_events(app, "_system") if t == "ticket.erased"]
    assert [r["actor"]["reason"] for r in records] == ["GDPR request 17", "second"]


def _sqlite_bytes(url: str, *, checkpoint: bool) -> bytes:
    """The file and its WAL; ``checkpoint`` first moves the WAL into the file, so that the
    erasure has to overwrite the rows where they lie (``secure_delete``), not only in the WAL."""
    path = Path(make_url(url).database or "")
    if checkpoint:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def _pg_dump(url: str) -> bytes:
    """``pg_dump`` of the test database after the VACUUM FULL docs/AUDIT.md prescribes."""
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(host=parsed.host, user=parsed.username, database=parsed.database)
    try:
        await conn.execute(f"VACUUM FULL {', '.join(VACUUM_TABLES)}")
    finally:
        await conn.close()
    args = ["pg_dump", "-h", str(parsed.host), "-U", str(parsed.username), str(parsed.database)]
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, check=True)
    return bytes(done.stdout)


async def _database_bytes(app: Any, *, checkpoint: bool = False) -> bytes:
    url = app.state.settings.database_url
    if url.startswith("sqlite"):
        return _sqlite_bytes(url, checkpoint=checkpoint)
    return await _pg_dump(url)


async def test_erased_markers_are_nowhere_in_the_database_files(
    app: Any, client: httpx.AsyncClient, receiver: FakeReceiver
) -> None:
    mark = markers()
    world = await ticket_with_personal_data(app, client, receiver, mark)
    found = await _database_bytes(app, checkpoint=True)
    assert [f for f, m in mark.items() if m.encode() in found] == list(mark)  # all there
    erased = await client.post(ERASE, json={"reason": "GDPR 18"}, headers=world["admin"])
    assert erased.status_code == 200, erased.text
    found = await _database_bytes(app)
    assert [f for f, m in mark.items() if m.encode() in found] == []
    async with app.state.engine.connect() as conn:  # the rest is still there
        count = await conn.scalar(text("SELECT count(*) FROM sessions"))
    assert count == 1
