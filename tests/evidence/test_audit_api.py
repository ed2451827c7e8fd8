"""The audit API end to end: events of a real session flow, timeline, verification, bundle,
erasure, tampering by hand, and rollback detection against the published checkpoint."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from audit.bundle import verify_bundle
from broker.tasks import check_audit_log, publish_checkpoint
from tests.factories import (
    make_device,
    make_group,
    make_token,
    make_user,
    while_verification_is_held,
)

TICKET = {"system": "zammad", "external_id": "HD-4711", "subject": "Printer offline"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def world(app: Any, client: httpx.AsyncClient) -> dict[str, Any]:
    """A technician's session on HD-4711, approved and ended, plus tokens for each role."""
    tech, _ = await make_user(app, "technician")
    auditor, _ = await make_user(app, "auditor")
    admin, _ = await make_user(app, "admin")
    group = await make_group(app, [tech])
    device = await make_device(app, group)
    tokens = {
        "technician": await make_token(app, tech),
        "auditor": await make_token(app, auditor),
        "admin": await make_token(app, admin),
    }
    created = await client.post(
        "/api/v1/sessions",
        json={
            "ticket": TICKET,
            "device_id": device.id,
            "reason": "printer queue is stuck since the update",
            "capabilities": ["view", "control"],
            "duration_minutes": 30,
        },
        headers=bearer(tokens["technician"]),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["consent"]["url"].rsplit("/", 1)[1]
    decided = await client.post(
        f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 200, decided.text
    return {"tokens": tokens, "session": body["session"]["id"] if "session" in body else body["id"]}


async def test_timeline_shows_the_flow_with_integrity(
    client: httpx.AsyncClient, world: Any
) -> None:
    response = await client.get(
        "/api/v1/audit/tickets/zammad/HD-4711/events", headers=bearer(world["tokens"]["auditor"])
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["integrity_ok"] is True
    types = [e["event_type"] for e in body["events"]]
    assert "session.awaiting_consent" in types
    assert "consent.decided" in types or "session.approved" in types
    assert [e["seq"] for e in body["events"]] == list(range(1, len(types) + 1))
    assert all(e["payload"] is not None for e in body["events"])


@pytest.mark.parametrize(
    ("role", "status"), [("technician", 403), ("admin", 403), ("anonymous", 401)]
)
async def test_only_auditors_read_the_timeline(
    client: httpx.AsyncClient, world: Any, role: str, status: int
) -> None:
    headers = {} if role == "anonymous" else bearer(world["tokens"][role])
    for method, path, body in [
        ("GET", "/api/v1/audit/tickets/zammad/HD-4711/events", None),
        ("GET", "/api/v1/audit/verify", None),
        ("GET", "/api/v1/audit/checkpoint", None),
        ("POST", "/api/v1/audit/tickets/zammad/HD-4711/bundle", {"reason": "review"}),
    ]:
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert set(response.json()) == {"error", "detail"}


async def test_bundle_verifies_offline_and_export_is_audited(
    client: httpx.AsyncClient, world: Any
) -> None:
    headers = bearer(world["tokens"]["auditor"])
    response = await client.post(
        "/api/v1/audit/tickets/zammad/HD-4711/bundle",
        json={"reason": "quarterly review", "include_plaintext": True},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    key = (await client.get("/api/v1/audit/public-key")).text
    from audit.checkpoint import VerifierKey

    report = verify_bundle(response.content, VerifierKey.parse(key))
    assert report.ok, report.verdict()
    names = zipfile.ZipFile(BytesIO(response.content)).namelist()
    assert "payloads.jsonl" in names
    timeline = await client.get("/api/v1/audit/tickets/zammad/HD-4711/events", headers=headers)
    assert "evidence.exported" in [e["event_type"] for e in timeline.json()["events"]]


async def test_export_needs_a_reason_and_a_known_ticket(
    client: httpx.AsyncClient, world: Any
) -> None:
    headers = bearer(world["tokens"]["auditor"])
    missing = await client.post(
        "/api/v1/audit/tickets/zammad/HD-4711/bundle", json={}, headers=headers
    )
    assert missing.status_code == 422
    unknown = await client.post(
        "/api/v1/audit/tickets/zammad/NOPE-1/bundle", json={"reason": "look"}, headers=headers
    )
    assert unknown.status_code == 404


async def test_erasure_shreds_content_and_the_log_still_verifies(
    client: httpx.AsyncClient, world: Any
) -> None:
    admin, auditor = bearer(world["tokens"]["admin"]), bearer(world["tokens"]["auditor"])
    forbidden = await client.post(
        "/api/v1/audit/tickets/zammad/HD-4711/erase", json={"reason": "gdpr"}, headers=auditor
    )
    assert forbidden.status_code == 403
    erased = await client.post(
        "/api/v1/audit/tickets/zammad/HD-4711/erase",
        json={"reason": "GDPR request 2026-17"},
        headers=admin,
    )
    assert erased.status_code == 200, erased.text
    events = (
        await client.get("/api/v1/audit/tickets/zammad/HD-4711/events", headers=auditor)
    ).json()["events"]
    before = [e for e in events if e["event_type"] != "ticket.erased"]
    assert before
    assert all(e["erased"] and e["payload"] is None for e in before)
    assert any(e["event_type"] == "ticket.erased" and e["payload"] for e in events)
    verdict = (await client.get("/api/v1/audit/verify", headers=auditor)).json()
    assert verdict["ok"] is True, verdict
    again = await client.post(
        "/api/v1/audit/tickets/zammad/HD-4711/erase", json={"reason": "twice"}, headers=admin
    )
    # The timeline view was sealed on the ticket since: erasable again (tests/connectors/
    # test_erasure.py: with nothing sealed since, 409), and the first record survives.
    assert again.status_code == 200, again.text
    system = (
        await client.get(
            "/api/v1/audit/system/events?event_type=ticket.erased&limit=10", headers=auditor
        )
    ).json()
    assert len(system["events"]) == 2, system


async def test_tampering_by_hand_is_named(app: Any, client: httpx.AsyncClient, world: Any) -> None:
    async with app.state.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT position, record_id FROM audit_records "
                    "WHERE stream = 'zammad:HD-4711' ORDER BY position LIMIT 1 OFFSET 1"
                )
            )
        ).one()
        await conn.execute(
            text("UPDATE audit_records SET event_type = 'session.denied' WHERE position = :p"),
            {"p": row.position},
        )
    verdict = (
        await client.get("/api/v1/audit/verify", headers=bearer(world["tokens"]["auditor"]))
    ).json()
    assert verdict["ok"] is False
    assert verdict["position"] == row.position
    assert verdict["record_id"] == row.record_id
    assert str(row.position) in verdict["verdict"]


async def test_rollback_against_published_checkpoint_is_loud(
    app: Any, client: httpx.AsyncClient, world: Any
) -> None:
    assert await publish_checkpoint(app) > 0
    assert await check_audit_log(app) is True
    async with app.state.engine.begin() as conn:
        top = (await conn.execute(text("SELECT max(position) FROM audit_records"))).scalar_one()
        await conn.execute(text("DELETE FROM audit_records WHERE position = :p"), {"p": top})
        await conn.execute(text("DELETE FROM audit_checkpoints WHERE size = :s"), {"s": top + 1})
    assert await check_audit_log(app) is False
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"] == "audit_rollback"
    checkpoint = await client.get(
        "/api/v1/audit/checkpoint", headers=bearer(world["tokens"]["auditor"])
    )
    # The bearer request itself appended (auth.token_used) after the cut: the log has moved
    # on from a rolled-back state, which reads as a fork of the published history.
    assert checkpoint.json()["published"]["ok"] is False
    assert checkpoint.json()["published"]["detail"].startswith(("ROLLBACK", "FORK"))
    # Whole-log verification compares with the published head too.
    verdict = (
        await client.get("/api/v1/audit/verify", headers=bearer(world["tokens"]["auditor"]))
    ).json()
    assert verdict["ok"] is False


async def test_checkpoint_and_public_key(client: httpx.AsyncClient, world: Any) -> None:
    body = (
        await client.get("/api/v1/audit/checkpoint", headers=bearer(world["tokens"]["auditor"]))
    ).json()
    key = (await client.get("/api/v1/audit/public-key")).text.strip()
    assert body["public_key"] == key
    assert body["note"].startswith("supportbroker.local/audit\n")
    assert json.dumps(body["published"])


async def test_others_write_while_the_auditor_verifies(
    app: Any, client: httpx.AsyncClient, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's own transaction ends before the verification: on SQLite it holds the
    write lock from its first statement, and a long verification stalled every writer."""
    auditor = bearer(world["tokens"]["auditor"])
    response = await while_verification_is_held(
        app, monkeypatch, client.get("/api/v1/audit/verify", headers=auditor)
    )
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
