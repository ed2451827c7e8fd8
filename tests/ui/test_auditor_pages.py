"""The auditor's pages through HTTP: who may open what, CSRF on every form, the timeline's
integrity (green, then red after a record is tampered with in the database), replay with a
reason (audited), the evidence bundle, erasure by admins, the checkpoint page and search."""

from __future__ import annotations

import asyncio
import re
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from io import BytesIO
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from audit.bundle import verify_bundle
from audit.checkpoint import VerifierKey
from broker.auth.models import User
from broker.gateway.recording import open_recorder
from broker.sessions import service as sessions
from broker.ui import auditor_service
from tests.browser_login import form_login
from tests.factories import (
    PASSWORDS,
    Desk,
    audit_events,
    bearer,
    consent_token,
    make_desk,
    make_device,
    make_token,
    make_user,
    open_session,
    update_session_row,
    while_verification_is_held,
)

STREAM = "helpdesk:HD-4711"
TIMELINE = "/ui/audit/tickets/helpdesk/HD-4711"
ROLES = ("auditor", "admin", "technician", "anonymous")


class Browser:
    """A cookie-authenticated client (as a browser is) and its CSRF token."""

    def __init__(self, client: httpx.AsyncClient, csrf: str | None) -> None:
        self.client, self.csrf = client, csrf

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def post(self, path: str, data: dict[str, str], csrf: bool = True) -> httpx.Response:
        form = dict(data)
        if csrf and self.csrf:
            form["csrf_token"] = self.csrf
        return await self.client.post(path, data=form)


async def _browser(app: Any, user: User | None) -> Browser:
    """A client logged in as ``user`` through the login form (none: a visitor)."""
    transport = httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))
    client = httpx.AsyncClient(transport=transport, base_url="http://broker.test")
    if user is None:
        return Browser(client, None)
    return Browser(client, await form_login(client, user.username, PASSWORDS[user.id]))


@pytest.fixture
async def world(app: Any, client: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """An approved session on helpdesk:HD-4711 and a logged-in browser for every role."""
    desk = await make_desk(app)
    auditor, _ = await make_user(app, "auditor")
    admin, _ = await make_user(app, "admin")
    created = await open_session(
        client, desk, ticket={"system": "helpdesk", "external_id": "HD-4711", "subject": "Printer"}
    )
    decided = await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": "approve", "name": "Erika"},
    )
    assert decided.status_code == 200, decided.text
    browsers = {
        "auditor": await _browser(app, auditor),
        "admin": await _browser(app, admin),
        "technician": await _browser(app, desk.tech),
        "anonymous": await _browser(app, None),
    }
    yield {
        "desk": desk,
        "session": created["id"],
        "browsers": browsers,
        "users": {"auditor": auditor},
    }
    for b in browsers.values():
        await b.client.aclose()


def _get_pages(sid: str) -> dict[str, set[str]]:
    """GET pages and the roles that may open them."""
    return {
        "/ui/audit/sessions": {"auditor", "admin"},
        f"/ui/audit/sessions/{sid}": {"auditor"},
        f"/ui/audit/sessions/{sid}/replay": {"auditor"},
        TIMELINE: {"auditor"},
        f"{TIMELINE}/erase": {"admin"},
        "/ui/audit/checkpoint": {"auditor"},
        "/ui/audit/security": {"auditor"},
        "/ui/audit/playback": {"auditor"},
        "/ui/reports": {"auditor", "admin"},
        "/ui/reports/technicians.csv": {"auditor", "admin"},
    }


def _post_forms(sid: str) -> dict[str, tuple[dict[str, str], set[str]]]:
    """POST forms, a valid body for each, and the roles that may send them."""
    return {
        f"/ui/audit/sessions/{sid}/replay": ({"reason": "incident review"}, {"auditor"}),
        f"{TIMELINE}/bundle": ({"reason": "incident review"}, {"auditor"}),
        "/ui/audit/checkpoint/verify": ({}, {"auditor"}),
        "/ui/audit/playback": ({"session_id": sid, "reason": "incident review"}, {"auditor"}),
        "/ui/audit/playback/unknown": ({"decision": "approve"}, {"auditor"}),
        f"{TIMELINE}/erase": ({"reason": "GDPR request 7", "confirm": STREAM}, {"admin"}),
    }


@pytest.mark.parametrize("role", ROLES)
async def test_every_page_and_form_by_role(world: Any, role: str) -> None:
    browser: Browser = world["browsers"][role]
    sid = world["session"]
    for path, allowed in _get_pages(sid).items():
        response = await browser.get(path)
        if role == "anonymous":
            assert response.status_code == 303, path
            assert response.headers["location"] == f"/ui/login?next={quote(path, safe='')}"
        elif role in allowed:
            assert response.status_code == 200, (path, response.text)
        else:
            assert response.status_code == 403, (path, response.text)
            assert "may not open this page" in response.text
    for path, (body, allowed) in _post_forms(sid).items():
        if role in allowed:
            continue  # the allowed POSTs are exercised (and change state) in their own tests
        response = await browser.post(path, body)
        if role == "anonymous":
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/ui/login?next=")
        else:
            assert response.status_code == 403, (path, response.text)


async def test_anonymous_redirect_keeps_the_query(world: Any) -> None:
    response = await world["browsers"]["anonymous"].get("/ui/audit/sessions?state=ended&page=2")
    assert response.status_code == 303
    assert (
        response.headers["location"]
        == "/ui/login?next=%2Fui%2Faudit%2Fsessions%3Fstate%3Dended%26page%3D2"
    )


async def test_csrf_is_enforced_on_every_post_form(app: Any, world: Any) -> None:
    sid = world["session"]
    await _record_terminal(app, sid, b"hello\r\n")
    for path, (body, allowed) in _post_forms(sid).items():
        (role,) = allowed
        browser: Browser = world["browsers"][role]
        missing = await browser.post(path, body, csrf=False)
        assert missing.status_code == 403, path
        assert "CSRF" in missing.json()["detail"], path
        wrong = await browser.client.post(path, data={**body, "csrf_token": "forged"})
        assert wrong.status_code == 403, path
    # Nothing got through: no replay, no export, no erasure was recorded.
    types = [t for t, _ in await audit_events(app, STREAM)]
    assert "recording.viewed" not in types
    assert "evidence.exported" not in types
    assert "ticket.erased" not in types
    assert "playback.requested" not in types
    # And every POST form the pages render carries the token.
    pages = [
        f"/ui/audit/sessions/{sid}/replay",
        TIMELINE,
        "/ui/audit/checkpoint",
        "/ui/audit/playback",
    ]
    for path in pages:
        html = (await world["browsers"]["auditor"].get(path)).text
        _assert_forms_carry_csrf(html, world["browsers"]["auditor"].csrf, path)
    html = (await world["browsers"]["admin"].get(f"{TIMELINE}/erase")).text
    _assert_forms_carry_csrf(html, world["browsers"]["admin"].csrf, "erase")


def _assert_forms_carry_csrf(html: str, csrf: str, where: str) -> None:
    forms = re.findall(r'<form[^>]*method="post".*?</form>', html, flags=re.S)
    assert forms, where
    for form in forms:
        assert f'name="csrf_token" value="{csrf}"' in form, where


# --- timeline -------------------------------------------------------------------------------


def _row_states(html: str) -> dict[int, bool]:
    return {
        int(p): ok == "true"
        for p, ok in re.findall(r'data-position="(\d+)" data-ok="(true|false)"', html)
    }


async def test_timeline_is_green_for_an_intact_log_and_red_after_tampering(
    app: Any, world: Any
) -> None:
    auditor: Browser = world["browsers"]["auditor"]
    page = await auditor.get(TIMELINE)
    assert page.status_code == 200, page.text
    assert 'data-integrity="ok"' in page.text
    rows = _row_states(page.text)
    assert len(rows) >= 3
    assert all(rows.values())
    assert "session.awaiting_consent" in page.text
    assert "session.approved" in page.text
    assert f'href="/ui/audit/sessions/{world["session"]}"' in page.text
    assert "audit.timeline_viewed" in [t for t, _ in await audit_events(app, STREAM)]

    async with app.state.engine.begin() as conn:
        position = (
            await conn.execute(
                text(
                    "SELECT position FROM audit_records WHERE stream = :s "
                    "ORDER BY position LIMIT 1 OFFSET 1"
                ),
                {"s": STREAM},
            )
        ).scalar_one()
    # Checkpoints come on a cadence (1 s): the edit below is caught by a failed proof once a
    # signed checkpoint covers the record, so wait for the broker to sign one that does.
    for _ in range(100):
        async with app.state.engine.connect() as conn:
            latest = await app.state.audit_log.latest_checkpoint(conn)
        if latest is not None and latest.size > position:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("no signed checkpoint covered the ticket's records within 10 s")
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text("UPDATE audit_records SET event_type = 'session.denied' WHERE position = :p"),
            {"p": position},
        )
    page = await auditor.get(TIMELINE)
    assert page.status_code == 200, page.text
    assert 'data-integrity="failed"' in page.text
    rows = _row_states(page.text)
    assert {p for p, ok in rows.items() if not ok} == {position}
    assert "not in the signed checkpoint" in page.text  # its proof fails, no full pass needed
    # The whole log is not verified per view: the button runs it, the page shows the verdict.
    assert f"first bad record: position {position}" not in page.text
    asked = await auditor.post(f"{TIMELINE}/verify", {})
    assert asked.status_code == 303
    await app.state.verifications.task
    page = await auditor.get(TIMELINE)
    assert 'data-verification="failed"' in page.text
    assert f"first bad record: position {position}" in page.text


async def test_unknown_ticket_is_a_404_page(world: Any) -> None:
    response = await world["browsers"]["auditor"].get("/ui/audit/tickets/helpdesk/NOPE-1")
    assert response.status_code == 404
    assert "no events for helpdesk:NOPE-1" in response.text


# --- evidence bundle and erasure -------------------------------------------------------------


async def test_bundle_download_verifies_and_is_audited(app: Any, world: Any) -> None:
    auditor: Browser = world["browsers"]["auditor"]
    refused = await auditor.post(f"{TIMELINE}/bundle", {"reason": ""})
    assert refused.status_code == 422
    assert "evidence.exported" not in [t for t, _ in await audit_events(app, STREAM)]

    response = await auditor.post(
        f"{TIMELINE}/bundle", {"reason": "court order 12", "include_plaintext": "true"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="evidence-helpdesk-HD-4711.zip"' in response.headers["content-disposition"]
    key = (await auditor.get("/api/v1/audit/public-key")).text
    report = verify_bundle(response.content, VerifierKey.parse(key))
    assert report.ok, report.verdict()
    assert "payloads.jsonl" in zipfile.ZipFile(BytesIO(response.content)).namelist()
    exported = [p for t, p in await audit_events(app, STREAM) if t == "evidence.exported"]
    assert exported[-1]["data"]["reason"] == "court order 12"
    assert exported[-1]["data"]["include_plaintext"] is True


async def test_admin_erases_after_confirming_and_the_log_still_verifies(
    app: Any, world: Any
) -> None:
    admin: Browser = world["browsers"]["admin"]
    wrong = await admin.post(f"{TIMELINE}/erase", {"reason": "GDPR 7", "confirm": "HD-4711"})
    assert wrong.status_code == 422
    assert "type helpdesk:HD-4711 to confirm" in wrong.text
    done = await admin.post(f"{TIMELINE}/erase", {"reason": "GDPR 7", "confirm": STREAM})
    assert done.status_code == 200, done.text
    assert "Erased" in done.text
    assert "in the system stream" in done.text
    again = await admin.post(f"{TIMELINE}/erase", {"reason": "GDPR 8", "confirm": STREAM})
    assert again.status_code == 409, again.text  # nothing sealed since: refused, kept
    assert "nothing was sealed for it since" in again.text
    page = await world["browsers"]["auditor"].get(TIMELINE)
    assert "content erased" in page.text
    assert 'data-integrity="ok"' in page.text


# --- replay ------------------------------------------------------------------------------------


async def _record_terminal(app: Any, session_id: str, output: bytes) -> str:
    """A sealed terminal recording of the session, written as the gateway writes one."""
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, session_id)
    recorder = await open_recorder(
        app.state.audit_log, app.state.engine.begin, record, chunk_seconds=60
    )
    await recorder.output(output)
    await recorder.close("session ended")
    return recorder.recording_id


async def test_replay_needs_a_reason_and_is_audited(app: Any, world: Any) -> None:
    sid = world["session"]
    recording_id = await _record_terminal(app, sid, b"$ echo audited-replay-42\r\n")
    auditor: Browser = world["browsers"]["auditor"]
    form = await auditor.get(f"/ui/audit/sessions/{sid}/replay")
    assert form.status_code == 200
    assert recording_id in form.text

    refused = await auditor.post(f"/ui/audit/sessions/{sid}/replay", {"reason": " "})
    assert refused.status_code == 422
    assert "reason" in refused.text
    assert "recording.viewed" not in [t for t, _ in await audit_events(app, STREAM)]

    played = await auditor.post(
        f"/ui/audit/sessions/{sid}/replay",
        {"reason": "incident INC-9 review", "recording_id": recording_id},
    )
    assert played.status_code == 200, played.text
    assert "audited-replay-42" in played.text
    assert "/vendor/asciinema-player/asciinema-player.min.js" in played.text
    assert "Complete and sealed" in played.text
    (viewed,) = [p for t, p in await audit_events(app, STREAM) if t == "recording.viewed"]
    assert viewed["data"]["reason"] == "incident INC-9 review"
    assert viewed["data"]["recording_id"] == recording_id
    assert viewed["actor"]["role"] == "auditor"


async def test_session_detail_lists_recordings(app: Any, world: Any) -> None:
    sid = world["session"]
    recording_id = await _record_terminal(app, sid, b"ls\r\n")
    page = await world["browsers"]["auditor"].get(f"/ui/audit/sessions/{sid}")
    assert page.status_code == 200
    assert recording_id in page.text
    # The recording's start is a <time> (the reader's zone), not its ISO text.
    row = page.text.split(recording_id, 1)[1].split("</tr>", 1)[0]
    assert '<td><time datetime="' in row
    assert "Erika Mustermann" in page.text  # the device owner
    missing = await world["browsers"]["auditor"].get("/ui/audit/sessions/nope")
    assert missing.status_code == 404


async def test_vendor_serves_the_player_and_chartjs() -> None:
    from broker.gateway.pages import VENDOR

    for name in (
        "asciinema-player/asciinema-player.min.js",
        "asciinema-player/asciinema-player.css",
        "chart.js/chart.umd.min.js",
    ):
        assert VENDOR[name].exists(), f"{name}: run `npm install`"


# --- checkpoint ----------------------------------------------------------------------------------


async def test_checkpoint_page_shows_the_signed_head_and_verifies(app: Any, world: Any) -> None:
    auditor: Browser = world["browsers"]["auditor"]
    page = await auditor.get("/ui/audit/checkpoint")
    assert page.status_code == 200
    async with app.state.sessionmaker() as db:
        latest = await app.state.audit_log.latest_checkpoint(await db.connection())
    assert latest.root.hex() in page.text
    assert latest.origin in page.text
    key = (await auditor.get("/api/v1/audit/public-key")).text.strip()
    assert key in page.text
    signature = latest.note.partition("\n\n")[2].splitlines()[0]
    assert signature in page.text

    verified = await auditor.post("/ui/audit/checkpoint/verify", {})
    assert verified.status_code == 200
    assert 'data-integrity="ok"' in verified.text
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text("UPDATE audit_records SET event_type = 'x.y' WHERE position = 1"),
        )
    failed = await auditor.post("/ui/audit/checkpoint/verify", {})
    assert failed.status_code == 200
    assert 'data-integrity="failed"' in failed.text
    assert "position 1" in failed.text


async def test_others_write_while_a_page_verifies(
    app: Any, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint page verifies the whole log without holding the writer lock (the
    timeline does not verify it per view: tests/ui/test_auditor_timeline_proofs.py)."""
    auditor: Browser = world["browsers"]["auditor"]
    request = auditor.post("/ui/audit/checkpoint/verify", {})
    shown = await while_verification_is_held(app, monkeypatch, request)
    assert shown.status_code == 200
    assert 'data-integrity="ok"' in shown.text


# --- search -------------------------------------------------------------------------------------


def _ids(html: str) -> set[str]:
    return set(re.findall(r'href="/ui/audit/sessions/([0-9a-f-]{36})"', html))


async def test_search_filters_and_pages(
    app: Any, client: httpx.AsyncClient, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk: Desk = world["desk"]
    first = world["session"]
    other = await make_desk(app)
    second_device = await make_device(app, desk.group, name="pc-accounting")
    b = await open_session(
        client, desk, ticket={"system": "zammad", "external_id": "Z-2"}, device_id=second_device.id
    )
    c = await open_session(client, other)
    await update_session_row(app, c["id"], provider="anydesk")
    from datetime import UTC, datetime

    await update_session_row(
        app, b["id"], requested_at=datetime(2025, 1, 15, 12, 0, tzinfo=UTC), state="denied"
    )
    auditor: Browser = world["browsers"]["auditor"]

    async def found(query: str) -> set[str]:
        response = await auditor.get(f"/ui/audit/sessions?{query}")
        assert response.status_code == 200, response.text
        return _ids(response.text)

    assert await found("") == {first, b["id"], c["id"]}
    assert await found("ticket=HD-4711") == {first, c["id"]}
    assert await found("ticket=zammad:Z-2") == {b["id"]}
    # Any part of the ticket's id or its subject, in any case.
    assert await found("ticket=4711") == {first, c["id"]}
    assert await found("ticket=z-") == {b["id"]}
    assert await found("ticket=PRINT") == {first, c["id"]}
    assert await found("ticket=%25") == set()  # a LIKE wildcard is only a character
    assert await found("ticket=_") == set()
    assert await found("ticket=hd%5F4711") == set()  # "_" is no wildcard either
    assert await found(f"technician={other.tech.id}") == {c["id"]}
    assert await found(f"device={second_device.id}") == {b["id"]}
    assert await found("device=pc-accounting") == {b["id"]}  # typed by its name
    assert await found("device=pc-acc") == set()  # a name, not a part of one
    assert await found("provider=anydesk") == {c["id"]}
    assert await found("state=denied") == {b["id"]}
    assert await found("since=2025-01-15&until=2025-01-15") == {b["id"]}
    assert await found("until=2025-01-14") == set()

    bad = await auditor.get("/ui/audit/sessions?since=15.01.2025")
    assert bad.status_code == 422
    assert "YYYY-MM-DD" in bad.text

    monkeypatch.setattr(auditor_service, "PAGE_SIZE", 2)
    page1 = await auditor.get("/ui/audit/sessions")
    page2 = await auditor.get("/ui/audit/sessions?page=2")
    assert len(_ids(page1.text)) == 2
    assert len(_ids(page2.text)) == 1
    assert _ids(page1.text) | _ids(page2.text) == {first, b["id"], c["id"]}
    assert 'rel="next"' in page1.text
    assert 'rel="next"' not in page2.text

    # Admins search too, but their rows lead to erasure, not to content.
    admin_page = await world["browsers"]["admin"].get("/ui/audit/sessions")
    assert _ids(admin_page.text) == set()
    assert "/ui/audit/tickets/helpdesk/HD-4711/erase" in admin_page.text


async def test_search_by_event_type_and_dates_in_words(
    app: Any, client: httpx.AsyncClient, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk: Desk = world["desk"]
    first = world["session"]
    b = await open_session(client, desk, ticket={"system": "zammad", "external_id": "Z-9"})
    await client.post(
        f"/api/v1/consent/{consent_token(b)}/decision", json={"decision": "deny", "name": "E"}
    )
    auditor: Browser = world["browsers"]["auditor"]

    async def found(query: str) -> set[str]:
        response = await auditor.get(f"/ui/audit/sessions?{query}")
        assert response.status_code == 200, response.text
        return _ids(response.text)

    form = (await auditor.get("/ui/audit/sessions")).text
    # the catalogue's words, not raw names, in the select
    assert '<option value="session.denied">The end user refused the request</option>' in form
    assert await found("event=session.denied") == {b["id"]}
    assert await found("event=session.requested") == {first, b["id"]}
    assert await found("event=session.denied&until=2025-01-14") == set()
    today = datetime.now(UTC).date().isoformat()
    assert await found(f"event=session.denied&since={today}&until={today}") == {b["id"]}
    picked = await auditor.get("/ui/audit/sessions?event=session.denied")
    assert '<option value="session.denied" selected>' in picked.text
    monkeypatch.setattr(auditor_service, "PAGE_SIZE", 1)
    page1 = await auditor.get("/ui/audit/sessions?event=session.requested")
    assert "event=session.requested&amp;page=2" in page1.text  # the next page keeps the filter
    page2 = await auditor.get("/ui/audit/sessions?event=session.requested&page=2")
    assert _ids(page1.text) | _ids(page2.text) == {first, b["id"]}
    bad = await auditor.get("/ui/audit/sessions?event=session.nope")
    assert bad.status_code == 422
    assert "not an event type" in bad.text


async def test_checkpoint_page_covers_what_was_just_sealed(app: Any, world: Any) -> None:
    """Checkpoints come on a cadence; the page does not wait for it: the head it shows covers
    every record sealed before the page was asked for (a busy machine once showed none)."""
    from broker.evidence.events import EventType
    from broker.evidence.service import SYSTEM_ACTOR, audit_log_of, flush_events, record_event

    async with app.state.sessionmaker() as db:
        await record_event(db, EventType.ticket_updated, ticket="T-CP", actor=SYSTEM_ACTOR)
        await flush_events(db)
        await db.commit()
        size = await audit_log_of(db).size(await db.connection())
    page = (await world["browsers"]["auditor"].get("/ui/audit/checkpoint")).text
    assert f"<dt>Size (records)</dt><dd>{size}</dd>" in page


async def test_checkpoint_page_gives_one_answer_about_publishing(app: Any, world: Any) -> None:
    """Never "OK" beside "nothing published yet": before publishing the page says only that;
    after, the comparison made now (the start-up check is shown only when it alarmed)."""
    from broker.tasks import publish_checkpoint

    auditor: Browser = world["browsers"]["auditor"]
    before = (await auditor.get("/ui/audit/checkpoint")).text
    status = before.split('id="published-status">', 1)[1].split("</dd>", 1)[0]
    if app.state.audit_log.publisher is None:
        pytest.skip("this app publishes no checkpoints")
    assert "Not published yet" in status
    assert "OK" not in status
    assert "background check" not in before
    await publish_checkpoint(app)
    after = (await auditor.get("/ui/audit/checkpoint")).text
    status = after.split('id="published-status">', 1)[1].split("</dd>", 1)[0]
    assert "OK" in status
    assert "at the published checkpoint" in status
    assert "published yet" not in after


async def test_security_events_page_and_api(
    app: Any, client: httpx.AsyncClient, world: Any
) -> None:
    """A failed sign-in lands in the log's own stream; auditors find it on the page (in
    words, details as a table, raw JSON on demand) and through the API; paging works."""
    for _ in range(3):
        failed = await client.post(
            "/api/v1/auth/login", json={"username": "mallory", "password": "wrong-password-1"}
        )
        assert failed.status_code == 401
    auditor: Browser = world["browsers"]["auditor"]
    page = await auditor.get("/ui/audit/security")
    assert page.status_code == 200, page.text
    assert 'data-event="auth.login_failed"' in page.text
    assert "A sign-in failed (password, second factor, SSO)" in page.text
    assert "mallory" in page.text
    assert "Raw JSON" in page.text
    assert '<th scope="row">' in page.text
    assert 'data-event="auth.login"' not in page.text  # successful sign-ins are not security
    every = await auditor.get("/ui/audit/security?event_type=all")
    assert 'data-event="auth.login"' in every.text
    bad = await auditor.get("/ui/audit/security?event_type=nonsense")
    assert bad.status_code == 422
    assert "catalogue" in bad.text

    token = await make_token(app, world["users"]["auditor"], scopes=["audit:read"])
    api = await client.get(
        "/api/v1/audit/system/events",
        params={"event_type": "auth.login_failed", "limit": 2},
        headers=bearer(token),
    )
    assert api.status_code == 200, api.text
    body = api.json()
    assert [e["event_type"] for e in body["events"]] == ["auth.login_failed"] * 2
    assert body["has_more"] is True
    rest = await client.get(
        "/api/v1/audit/system/events",
        params={"event_type": "auth.login_failed", "limit": 2, "offset": 2},
        headers=bearer(token),
    )
    assert len(rest.json()["events"]) == 1
    assert rest.json()["has_more"] is False
    old = await client.get(
        "/api/v1/audit/system/events", params={"until": "2001-01-01"}, headers=bearer(token)
    )
    assert old.json()["events"] == []
    wrong = await client.get(
        "/api/v1/audit/system/events", params={"since": "yesterday"}, headers=bearer(token)
    )
    assert wrong.status_code == 422
    assert set(wrong.json()) >= {"error", "detail"}


async def test_timeline_reads_in_words_with_a_details_table(world: Any) -> None:
    page = (await world["browsers"]["auditor"].get(TIMELINE)).text
    assert "The consent receipt: who decided what, from where, until" in page
    assert '<code class="muted">consent.decided</code>' in page
    # Payload fields as rows; a timestamp inside is a <time>, never an ISO string as text.
    row = page.split('<th scope="row">data · decided at</th><td>', 1)[1].split("</td>", 1)[0]
    assert row.startswith('<time datetime="')
    assert "Raw JSON" in page


# --- timeline proofs, whole-log verification, device suggestions ----------------------------


def _proofs(html: str) -> dict[int, list[bytes]]:
    """Each row's inclusion proof as the page shows it (position: audit path)."""
    shown: dict[int, list[bytes]] = {}
    for position, cell in re.findall(r'<tr id="record-(\d+)"(.*?)</tr>', html, flags=re.S):
        if 'class="proof"' in cell:
            nodes = re.findall(r"<code data-proof-node>([0-9a-f]+)</code>", cell)
            shown[int(position)] = [bytes.fromhex(n) for n in nodes]
    return shown


async def test_timeline_shows_each_records_inclusion_proof_in_the_signed_checkpoint(
    app: Any, world: Any
) -> None:
    from audit.merkle import verify_inclusion

    auditor: Browser = world["browsers"]["auditor"]
    async with app.state.sessionmaker() as db:  # every record so far under a checkpoint
        await app.state.audit_log.sign_checkpoint(await db.connection())
        await db.commit()
    page = await auditor.get(TIMELINE)
    assert page.status_code == 200, page.text
    proofs = _proofs(page.text)
    async with app.state.engine.connect() as conn:
        latest = await app.state.audit_log.latest_checkpoint(conn)
        leaves = dict(
            (
                await conn.execute(
                    text("SELECT position, leaf_hash FROM audit_records WHERE stream = :s"),
                    {"s": STREAM},
                )
            ).all()
        )
    assert latest.root.hex() in page.text
    covered = {p for p in leaves if p < latest.size}
    assert covered
    assert set(proofs) == covered
    for position in covered:  # what the page shows verifies against the signed root
        verify_inclusion(
            bytes(leaves[position]), position, latest.size, proofs[position], latest.root
        )
    # The view itself was sealed after the checkpoint: it is shown as not yet covered.
    again = await auditor.get(TIMELINE)
    assert 'data-proof="uncovered"' in again.text


async def test_timeline_shows_the_last_background_verification_without_running_one(
    app: Any, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit.store import AuditLog

    auditor: Browser = world["browsers"]["auditor"]
    before = await auditor.get(TIMELINE)
    assert 'data-verification="none"' in before.text
    await app.state.verifications.start("schedule")  # what the schedule's tick runs
    calls: list[int] = []
    verify_log = AuditLog.verify_log

    async def counted(self: AuditLog, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await verify_log(self, *args, **kwargs)

    monkeypatch.setattr(AuditLog, "verify_log", counted)
    page = await auditor.get(TIMELINE)
    assert calls == []  # a view reads the last verdict, it never verifies the log
    assert 'data-verification="ok"' in page.text
    assert "(scheduled)" in page.text
    assert 'data-integrity="ok"' in page.text


async def test_verify_now_button_runs_in_the_background_and_is_audited(
    app: Any, world: Any
) -> None:
    auditor: Browser = world["browsers"]["auditor"]
    without = await auditor.post(f"{TIMELINE}/verify", {}, csrf=False)
    assert without.status_code == 403
    for role in ("technician", "anonymous"):
        refused = await world["browsers"][role].post(f"{TIMELINE}/verify", {})
        assert refused.status_code in (303, 403), (role, refused.status_code)
        assert "/ui/audit/tickets" not in refused.headers.get("location", "")
    assert "audit.verification_requested" not in [t for t, _ in await audit_events(app, STREAM)]
    unknown = await auditor.post("/ui/audit/tickets/helpdesk/NOPE-1/verify", {})
    assert unknown.status_code == 404

    asked = await auditor.post(f"{TIMELINE}/verify", {})
    assert asked.status_code == 303
    assert asked.headers["location"] == f"{TIMELINE}#integrity"
    await app.state.verifications.task
    requested = [
        p for t, p in await audit_events(app, STREAM) if t == "audit.verification_requested"
    ]
    assert len(requested) == 1
    assert requested[0]["actor"]["name"] == world["users"]["auditor"].display_name
    page = await auditor.get(TIMELINE)
    assert 'data-verification="ok"' in page.text
    assert f"asked for by {world['users']['auditor'].display_name}" in page.text


async def test_device_field_suggests_names_from_what_is_typed(app: Any, world: Any) -> None:
    desk: Desk = world["desk"]
    for name in ("ws-berlin-1", "ws-berlin-2", "ws-bonn-1"):
        await make_device(app, desk.group, name=name)
    auditor: Browser = world["browsers"]["auditor"]
    search = await auditor.get("/ui/audit/sessions")
    assert 'data-suggest="/api/v1/device-names"' in search.text
    assert "ws-berlin-1" not in search.text  # no option per device on the page
    found = await auditor.get("/api/v1/device-names", params={"prefix": "ws-ber"})
    assert found.status_code == 200, found.text
    assert [d["name"] for d in found.json()["items"]] == ["ws-berlin-1", "ws-berlin-2"]
    limited = await auditor.get("/api/v1/device-names", params={"prefix": "ws-", "limit": 1})
    assert [d["name"] for d in limited.json()["items"]] == ["ws-berlin-1"]
    script = await auditor.get("/static/suggest.js")
    assert script.status_code == 200
