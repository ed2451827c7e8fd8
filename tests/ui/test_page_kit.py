"""The page kit (broker/ui/kit.py) admits every page the same way and refuses with the API's
statuses: the audit views now ask for the password change and refuse callers that are no
user, as the other pages always did; the admin's group forms answer 404, 409 or 422 as the
API does for the same error, where they used to answer 422 for every refusal."""

from __future__ import annotations

from typing import Any

from broker.auth.service import create_user_with_password
from broker.evidence.service import SYSTEM_ACTOR
from tests.browser_login import form_login
from tests.factories import make_token, make_user
from tests.ui.browsers import Browser, browser, client_for

AUDIT_PAGES = ("/ui/audit/sessions", "/ui/audit/checkpoint", "/ui/reports")


async def test_audit_pages_send_a_one_time_password_to_the_change_first(app: Any) -> None:
    async with app.state.sessionmaker() as db:
        _user, password = await create_user_with_password(
            db, actor=SYSTEM_ACTOR, username="newauditor", role="auditor"
        )
        await db.commit()
    client = client_for(app)
    await form_login(client, "newauditor", password)
    for path in AUDIT_PAGES:
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/ui/password", path


async def test_audit_pages_refuse_an_api_token_with_the_login(app: Any) -> None:
    auditor, _ = await make_user(app, "auditor")
    token = await make_token(app, auditor)
    async with client_for(app) as client:
        for path in AUDIT_PAGES:
            answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/ui/login?next="), path
    # The same auditor through the login form is let in.
    b = await browser(app, auditor)
    assert (await b.get("/ui/audit/sessions")).status_code == 200


async def _group(b: Browser, name: str) -> str:
    made = await b.post("/ui/admin/groups", {"name": name, "consent_timeout_seconds": "300"})
    assert made.status_code == 303, made.text
    return str(made.headers["location"])


async def test_group_forms_answer_the_apis_status_for_each_error(app: Any) -> None:
    admin, _ = await make_user(app, "admin")
    b = await browser(app, admin)
    first = await _group(b, "front-office")
    second = await _group(b, "back-office")

    taken = await b.post("/ui/admin/groups", {"name": "front-office"})
    assert taken.status_code == 409
    assert "already exists" in taken.text
    # The form sends the fields it shows; the others (file limits) stay as they are.
    kept = await b.post(second, {"name": "back-office-2", "consent_timeout_seconds": "300"})
    assert kept.status_code == 303, kept.text
    renamed = await b.post(second, {"name": "front-office"})
    assert renamed.status_code == 409
    assert "already exists" in renamed.text

    missing = await b.post("/ui/admin/groups/no-such-group", {"name": "x"})
    assert missing.status_code == 404
    assert "Not found" in missing.text
    token = await b.post("/ui/admin/groups/no-such-group/enrollment-token", {"hours": "24"})
    assert token.status_code == 404

    bad = await b.post(first, {"name": "front-office", "questions": "no colon here"})
    assert bad.status_code == 422
    hours = await b.post(first + "/enrollment-token", {"hours": "soon"})
    assert hours.status_code == 422
    assert "a number of hours" in hours.text
