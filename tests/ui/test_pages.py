"""The login, technician and admin pages through HTTP: which role may open which page (200),
who is refused (403 page) and who is sent to the login (303), and CSRF on every form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.factories import (
    consent_token,
    make_desk,
    make_device,
    make_group,
    make_token,
    make_user,
    open_session,
)
from tests.ui.browsers import Browser, browser

ROLES = ("technician", "admin", "auditor", "anonymous")


@pytest.fixture
async def world(app: Any, client: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """A technician with a session awaiting consent, an admin, an auditor; a browser each."""
    desk = await make_desk(app)
    admin, _ = await make_user(app, "admin")
    auditor, _ = await make_user(app, "auditor")
    created = await open_session(client, desk)
    token_secret = await make_token(app, auditor)
    browsers = {
        "technician": await browser(app, desk.tech),
        "admin": await browser(app, admin),
        "auditor": await browser(app, auditor),
        "anonymous": await browser(app, None),
    }
    async with app.state.sessionmaker() as db:
        from broker.auth.tokens import list_tokens

        token_id = (await list_tokens(db))[0].id
    yield {
        "desk": desk,
        "admin": admin,
        "auditor": auditor,
        "session": created,
        "token_id": token_id,
        "token_secret": token_secret,
        "browsers": browsers,
    }
    for b in browsers.values():
        await b.client.aclose()


def get_pages(w: dict[str, Any]) -> dict[str, set[str]]:
    sid, gid = w["session"]["id"], w["desk"].group.id
    everyone = {"technician", "admin", "auditor"}
    return {
        "/ui/console": {"technician"},
        "/ui/console/sessions": {"technician"},
        "/ui/new": {"technician"},
        "/ui/new?system=helpdesk&ticket=HD-1": {"technician"},
        "/ui/new/ticket?system=helpdesk&ticket=HD-1": {"technician"},
        f"/ui/sessions/{sid}": {"technician", "admin"},
        f"/ui/sessions/{sid}/status": {"technician", "admin"},
        "/ui/admin": {"admin"},
        "/ui/admin/users": {"admin"},
        "/ui/admin/tokens": {"admin"},
        "/ui/admin/groups": {"admin"},
        f"/ui/admin/groups/{gid}": {"admin"},
        "/ui/account": everyone,
        "/ui/password": everyone,
    }


async def test_every_page_by_role(world: dict[str, Any]) -> None:
    for path, allowed in get_pages(world).items():
        for role in ROLES:
            response = await world["browsers"][role].get(path)
            if role in allowed:
                assert response.status_code == 200, (path, role, response.text[:300])
                assert "<html" in response.text or "hx-" in response.text or "<" in response.text
            elif role == "anonymous":
                assert response.status_code == 303, (path, role)
                assert response.headers["location"].startswith("/ui/login?next=%2Fui%2F"), path
            else:
                assert response.status_code == 403, (path, role, response.status_code)
                assert "may not open this page" in response.text


async def test_home_and_login_page_send_each_role_to_its_start(world: dict[str, Any]) -> None:
    starts = {"technician": "/ui/console", "admin": "/ui/admin", "auditor": "/ui/audit/sessions"}
    for role, start in starts.items():
        home = await world["browsers"][role].get("/ui")
        assert (home.status_code, home.headers["location"]) == (303, start), role
        login = await world["browsers"][role].get("/ui/login")
        assert (login.status_code, login.headers["location"]) == (303, start), role
    anonymous = world["browsers"]["anonymous"]
    assert (await anonymous.get("/ui")).headers["location"] == "/ui/login?next=%2Fui"
    page = await anonymous.get("/ui/login")
    assert page.status_code == 200
    assert '<label for="username">' in page.text
    assert '<label for="password">' in page.text


async def test_navigation_follows_the_role(world: dict[str, Any]) -> None:
    tech = (await world["browsers"]["technician"].get("/ui/console")).text
    admin = (await world["browsers"]["admin"].get("/ui/admin")).text
    assert 'href="/ui/new"' in tech
    assert 'href="/ui/admin/users"' not in tech
    assert 'href="/ui/admin/users"' in admin
    assert 'href="/ui/new"' not in admin


def post_forms(w: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every logged-in form: (role allowed, path, a valid body without csrf_token)."""
    sid, gid = w["session"]["id"], w["desk"].group.id
    tech_id, auditor_id = w["desk"].tech.id, w["auditor"].id
    return [
        (
            "technician",
            "/ui/sessions",
            {
                "system": "helpdesk",
                "ticket": "HD-9",
                "device_id": w["desk"].device.id,
                "reason": "Printer keeps jamming",
                "capabilities": "view",
                "duration_minutes": "30",
            },
        ),
        ("technician", f"/ui/sessions/{sid}/invite", {"expert_id": auditor_id}),
        ("technician", f"/ui/sessions/{sid}/cancel", {}),
        ("technician", f"/ui/sessions/{sid}/start", {}),
        ("technician", f"/ui/sessions/{sid}/end", {}),
        ("technician", "/ui/account/totp/start", {}),
        ("technician", "/ui/account/totp/confirm", {"code": "000000"}),
        ("technician", "/ui/account/totp/disable", {"code": "000000"}),
        ("technician", "/ui/password", {"current": "x", "new": "y", "confirm": "y"}),
        (
            "admin",
            "/ui/admin/users",
            {"username": "newbie", "display_name": "New Bie", "role": "technician"},
        ),
        ("admin", f"/ui/admin/users/{auditor_id}", {"role": "auditor", "active": "on"}),
        ("admin", f"/ui/admin/users/{auditor_id}/password", {}),
        ("admin", f"/ui/admin/users/{auditor_id}/totp", {}),
        ("admin", f"/ui/admin/users/{auditor_id}/unlock", {}),
        ("admin", "/ui/admin/tokens", {"name": "ci", "owner": auditor_id}),
        ("admin", f"/ui/admin/tokens/{w['token_id']}/revoke", {}),
        ("admin", "/ui/admin/groups", {"name": "lab"}),
        ("admin", f"/ui/admin/groups/{gid}", {"name": w["desk"].group.name}),
        ("admin", f"/ui/admin/groups/{gid}/members", {"user_id": tech_id}),
        ("admin", f"/ui/admin/groups/{gid}/members/{tech_id}/remove", {}),
        ("admin", f"/ui/admin/groups/{gid}/enrollment-token", {"hours": "2"}),
        ("admin", "/ui/logout", {}),
    ]


async def test_every_form_refuses_a_missing_or_wrong_csrf_token(world: dict[str, Any]) -> None:
    for role, path, body in post_forms(world):
        b: Browser = world["browsers"][role]
        missing = await b.post(path, body, csrf=False)
        assert missing.status_code == 403, (path, missing.text)
        assert missing.json()["detail"] == "missing or wrong CSRF token"
        wrong = await b.post(path, body, csrf="not-the-token")
        assert wrong.status_code == 403, path


async def test_every_form_works_with_its_token_for_its_role_only(world: dict[str, Any]) -> None:
    forms = post_forms(world)
    for role, path, body in forms:
        for other in ("technician", "admin", "auditor"):
            if other == role or path in ("/ui/logout",) or path.startswith("/ui/account"):
                continue
            if path == "/ui/password":
                continue
            refused = await world["browsers"][other].post(path, body)
            if path.startswith("/ui/sessions/") and other == "admin":
                continue  # admins may act on sessions (end); checked in test_console
            assert refused.status_code == 403, (path, other, refused.status_code)
        anonymous = await world["browsers"]["anonymous"].post(path, body)
        assert anonymous.status_code == 303
        assert "/ui/login" in anonymous.headers["location"]
    for role, path, body in forms:
        response = await world["browsers"][role].post(path, body)
        assert response.status_code != 403, (path, response.text[:300])
        assert response.status_code < 500, path


async def test_login_form_needs_its_double_submit_token(app: Any) -> None:
    user, password = await make_user(app, "technician")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://broker.test"
    ) as c:
        page = await c.get("/ui/login")
        token = c.cookies.get("sb_login_csrf")
        assert token
        assert f'value="{token}"' in page.text
        body = {"username": user.username, "password": password}
        assert (await c.post("/ui/login", data=body)).status_code == 403
        assert (await c.post("/ui/login", data={**body, "csrf_token": "forged"})).status_code == 403
        cross = await c.post(
            "/ui/login", data={**body, "csrf_token": token}, headers={"Origin": "https://evil.test"}
        )
        assert cross.status_code == 403
        assert (await c.post("/ui/login/totp", data={"code": "123456"})).status_code == 403
        ok = await c.post("/ui/login", data={**body, "csrf_token": token})
        assert ok.status_code == 303
        assert ok.headers["location"] == "/ui/console"
        assert c.cookies.get("sb_session")


async def test_consent_forms_refuse_posts_from_another_site(
    app: Any, client: httpx.AsyncClient
) -> None:
    desk = await make_desk(app)
    created = await open_session(client, desk)
    token = consent_token(created)
    evil = {"Origin": "https://evil.test"}
    forms = {
        "/consent": {"code": created["consent"]["code"]},
        f"/consent/{token}/decide": {"decision": "approve", "name": "Erika"},
        f"/consent/{token}/revoke": {},
        f"/consent/{token}/rate": {"score": "5"},
    }
    for path, body in forms.items():
        response = await client.post(path, data=body, headers=evil)
        assert response.status_code == 403, path
    fetch = {"Sec-Fetch-Site": "cross-site", "Origin": "null"}
    assert (await client.post("/consent", data=forms["/consent"], headers=fetch)).status_code == 403
    # our pages send no referrer, so the browser's own form posts carry Origin: null
    ours = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
    same = await client.post("/consent", data=forms["/consent"], headers=ours)
    assert same.status_code == 303


async def test_pages_of_another_technicians_session_are_refused(
    app: Any, world: dict[str, Any]
) -> None:
    other, _ = await make_user(app, "technician")
    group = await make_group(app, [other])
    await make_device(app, group)
    b = await browser(app, other)
    sid = world["session"]["id"]
    assert (await b.get(f"/ui/sessions/{sid}")).status_code == 403
    assert (await b.post(f"/ui/sessions/{sid}/cancel")).status_code == 403
    await b.client.aclose()


def test_no_page_loads_anything_from_another_host() -> None:
    """No CDN: every script, stylesheet, image and font comes from the broker itself."""
    import re

    from web import STATIC_DIR, TEMPLATES_DIR

    external = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)
    css_import = re.compile(r"""(?:@import|url\()\s*["']?(?:https?:)?//""", re.I)
    offenders = [
        str(path.relative_to(TEMPLATES_DIR.parent))
        for path in [*TEMPLATES_DIR.rglob("*.html"), *STATIC_DIR.rglob("*")]
        if path.is_file() and (external.search(text := path.read_text()) or css_import.search(text))
    ]
    assert offenders == []
    assert external.search('<script src="https://cdn.example/x.js">')  # the check can fail
