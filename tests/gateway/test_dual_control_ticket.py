"""Dual control beyond the group policy (docs/OVERSIGHT.md), on SQLite and PostgreSQL:

- ``supportbroker audit export --plaintext`` refuses under the policy unless it is given a
  plaintext-export request a second auditor approved (``--approval ID``), and seals which;
- a ticket's own switch: an auditor (API or the timeline page) switches it on, which puts the
  ticket's recordings and plaintext under dual control with no group policy; only an admin
  switches it off; both sealed as ``playback.policy_set``.
"""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from broker.cli import main
from broker.devices.models import DeviceGroup
from tests.factories import audit_events, bearer, make_token, make_user
from tests.gateway.test_dual_control import STREAM, V1, _recorded_session
from tests.ui.browsers import browser


@pytest.fixture
def cli_env(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBROKER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SUPPORTBROKER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SUPPORTBROKER_SECRET_KEY", settings.secret_key.get_secret_value())
    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "test")


async def _export(out: Path, *extra: str) -> int:
    argv = ["audit", "export", STREAM, "--out", str(out), "--reason", "court order 9", *extra]
    return await asyncio.to_thread(main, argv)


async def _approved(
    client: httpx.AsyncClient, first: dict[str, str], second: dict[str, str], body: dict[str, Any]
) -> str:
    asked = await client.post(f"{V1}/audit/playback-requests", json=body, headers=first)
    assert asked.status_code == 201, asked.text
    rid: str = asked.json()["id"]
    ok = await client.post(
        f"{V1}/audit/playback-requests/{rid}/decision", json={"decision": "approve"}, headers=second
    )
    assert ok.status_code == 200, ok.text
    return rid


async def test_cli_plaintext_export_needs_the_second_auditor(
    app: Any, client: httpx.AsyncClient, cli_env: None, tmp_path: Path, capsys: Any
) -> None:
    desk, sid = await _recorded_session(app, client)
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(DeviceGroup)
            .where(DeviceGroup.id == desk.group.id)
            .values(dual_control_playback=True)
        )
        await db.commit()
    first = bearer(await make_token(app, (await make_user(app, "auditor"))[0]))
    second = bearer(await make_token(app, (await make_user(app, "auditor"))[0]))
    out = tmp_path / "bundle.zip"

    assert await _export(out, "--plaintext") == 1
    err = capsys.readouterr().err
    assert "is under dual control" in err
    assert "--approval" in err
    assert "Traceback" not in err
    assert not out.exists()

    # A pending export request, and an approved replay request, open nothing.
    pending = await client.post(
        f"{V1}/audit/playback-requests",
        json={"system": "helpdesk", "external_id": "HD-4711", "reason": "court order 9"},
        headers=first,
    )
    assert await _export(out, "--plaintext", "--approval", pending.json()["id"]) == 1
    assert "is pending" in capsys.readouterr().err
    replay = await _approved(client, first, second, {"session_id": sid, "reason": "review"})
    assert await _export(out, "--plaintext", "--approval", replay) == 1
    assert "is not a request to export the plaintext" in capsys.readouterr().err
    assert not out.exists()

    # Without plaintext the sealed bundle needs nobody.
    assert await _export(out) == 0
    capsys.readouterr()

    ticket = {"system": "helpdesk", "external_id": "HD-4711", "reason": "court order 9"}
    rid = await _approved(client, first, second, ticket)
    assert await _export(out, "--plaintext", "--approval", rid) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with zipfile.ZipFile(out) as bundle:
        assert bundle.namelist()

    exports = [p["data"] for t, p in await audit_events(app, STREAM) if t == "evidence.exported"]
    assert exports[-2]["include_plaintext"] is False
    assert "request_id" not in exports[-2]
    assert exports[-1]["include_plaintext"] is True
    assert exports[-1]["request_id"] == rid
    assert exports[-1]["via"] == "cli"
    assert exports[-1]["requester_id"] != exports[-1]["approved_by"]


async def test_a_ticket_switch_puts_it_under_dual_control(
    app: Any, client: httpx.AsyncClient
) -> None:
    _, sid = await _recorded_session(app, client)
    admin = bearer(await make_token(app, (await make_user(app, "admin"))[0]))
    tech = bearer(await make_token(app, (await make_user(app, "technician"))[0]))
    auditor_user, _ = await make_user(app, "auditor")
    auditor = bearer(await make_token(app, auditor_user))
    replay = f"{V1}/gateway/sessions/{sid}/replay"
    switch = f"{V1}/audit/tickets/helpdesk/HD-4711/dual-control"
    asking = {"reason": "complaint CX-12"}

    assert (await client.post(replay, json=asking, headers=auditor)).status_code == 200
    no_reason = await client.put(switch, json={"dual_control": True, "reason": ""}, headers=auditor)
    assert no_reason.status_code == 422, no_reason.text
    assert (
        await client.put(switch, json={"dual_control": True, "reason": "VIP"}, headers=tech)
    ).status_code == 403
    missing = await client.put(
        f"{V1}/audit/tickets/helpdesk/HD-0000/dual-control",
        json={"dual_control": True, "reason": "VIP"},
        headers=auditor,
    )
    assert missing.status_code == 404, missing.text

    # The auditor switches it on from the timeline page.
    page = await browser(app, auditor_user)
    try:
        timeline = (await page.get("/ui/audit/tickets/helpdesk/HD-4711")).text
        assert 'data-dual-control="off"' in timeline
        assert "Require two auditors for this ticket" in timeline
        posted = await page.post(
            "/ui/audit/tickets/helpdesk/HD-4711/dual-control",
            {"dual_control": "on", "reason": "board member's laptop"},
        )
        assert posted.status_code == 303, posted.text
        after = (await page.get("/ui/audit/tickets/helpdesk/HD-4711")).text
        assert 'data-dual-control="on"' in after
        assert "Only an admin can switch it off" in after
        off = await page.post(
            "/ui/audit/tickets/helpdesk/HD-4711/dual-control",
            {"dual_control": "off", "reason": "done"},
        )
        assert off.status_code == 403, off.text
    finally:
        await page.client.aclose()

    refused = await client.post(replay, json=asking, headers=auditor)
    assert refused.status_code == 403, refused.text
    assert "dual control" in refused.json()["detail"]
    plain = {"reason": "court order", "include_plaintext": True}
    bundle = f"{V1}/audit/tickets/helpdesk/HD-4711/bundle"
    assert (await client.post(bundle, json=plain, headers=auditor)).status_code == 403

    api_off = await client.put(
        switch, json={"dual_control": False, "reason": "done"}, headers=auditor
    )
    assert api_off.status_code == 403, api_off.text
    assert "only an admin" in api_off.json()["detail"]
    admin_off = await client.put(
        switch, json={"dual_control": False, "reason": "case closed"}, headers=admin
    )
    assert admin_off.status_code == 200, admin_off.text
    assert admin_off.json() == {"ticket": STREAM, "dual_control": False}
    assert (await client.post(replay, json=asking, headers=auditor)).status_code == 200

    sealed = [p for t, p in await audit_events(app, STREAM) if t == "playback.policy_set"]
    assert [(p["data"]["dual_control"], p["actor"]["role"]) for p in sealed] == [
        (True, "auditor"),
        (False, "admin"),
    ]
    assert sealed[0]["data"]["reason"] == "board member's laptop"
