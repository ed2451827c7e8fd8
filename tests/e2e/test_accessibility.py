"""Accessibility of every page, measured in a real Chromium (computed styles, real focus):

- labels: every form control has an accessible name (a label, aria-label(ledby), a
  button's text);
- contrast: every visible text meets WCAG 2 AA against the background it is drawn on (4.5:1,
  3:1 for large text), computed from the browser's styles;
- keyboard: the first Tab stop is "Skip to content" (unless the page puts the focus in its
  one field, as the login and code pages do), and every element Tab reaches shows a visible
  focus indicator (outline or box shadow).

The page markup does not depend on the database, so this runs once (SQLite).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser_login import Logins
from tests.factories import (
    Desk,
    consent_token,
    make_device,
    make_group,
    make_token,
    make_user,
    open_session,
)

TAB_STOPS = 25

AUDIT_JS = """
() => {
  const problems = [];
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return r.width > 1 && r.height > 1 && s.visibility !== "hidden" && s.display !== "none";
  };
  const describe = (el) => el.outerHTML.slice(0, 120);
  for (const el of document.querySelectorAll(
      "input:not([type=hidden]), select, textarea, button")) {
    const labels = el.labels ? [...el.labels].map((l) => l.textContent.trim()).join(" ") : "";
    const byId = (el.getAttribute("aria-labelledby") || "").split(" ")
      .map((id) => document.getElementById(id)).filter(Boolean)
      .map((e) => e.textContent.trim()).join(" ");
    const own = el.tagName === "BUTTON" ? el.textContent.trim() : "";
    if (!labels && !byId && !own && !el.getAttribute("aria-label") && !el.title) {
      problems.push("no accessible name: " + describe(el));
    }
  }
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const lum = ({r, g, b}) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  for (const el of document.querySelectorAll("body *")) {
    const text = [...el.childNodes].filter((n) => n.nodeType === 3)
      .map((n) => n.textContent.trim()).join("");
    if (!text || !visible(el) || el.closest(".visually-hidden, canvas, svg")) continue;
    const s = getComputedStyle(el);
    const fg = parse(s.color);
    if (!fg) continue;
    const bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(s.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)}: "${text.slice(0, 40)}" ${s.color} on ` +
        `rgb(${bg.r}, ${bg.g}, ${bg.b})`);
    }
  }
  return problems;
}
"""

FOCUS_JS = """
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  const ring = (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0)
    || (s.boxShadow && s.boxShadow !== "none");
  return {tag: el.tagName, text: (el.textContent || el.name || "").trim().slice(0, 40), ring};
}
"""


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # the gateway runs: the consent page then says who is connected (a section of its own)
    return {"gateway_enabled": True, "gateway_port": 0}


async def _world(app: Any, client: httpx.AsyncClient) -> dict[str, Any]:
    tech, tech_password = await make_user(app, "technician")
    group = await make_group(app, [tech], questions=[{"id": "os", "label": "Which OS?"}])
    desk = Desk(tech, await make_token(app, tech), group, await make_device(app, group))
    admin, admin_password = await make_user(app, "admin")
    auditor, auditor_password = await make_user(app, "auditor")
    created = await open_session(client, desk)
    sid, gid = created["id"], desk.group.id
    # An approved session the technician is on while a supervisor came and went (the
    # gateway's note of terminal sockets; a real agent would add nothing to the markup).
    approved = await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "A-2"})
    decided = await client.post(
        f"/api/v1/consent/{consent_token(approved)}/decision",
        json={"decision": "approve", "name": "Erin"},
    )
    assert decided.status_code == 200, decided.text
    attendance = app.state.gateway.attendance
    attendance.enter(
        approved["id"], name=tech.display_name, role="technician", mode="control", via="terminal"
    )
    gone = attendance.enter(
        approved["id"], name="Sue S", role="supervisor", mode="watch", via="screen"
    )
    attendance.leave(approved["id"], gone)
    shown = await client.get(f"/consent/{consent_token(approved)}")
    assert "Who is connected to your computer" in shown.text  # the section is audited below
    consent_page = (await client.get(f"/consent/{consent_token(created)}")).text
    history = consent_page.split('href="/history/', 1)[1].split('"', 1)[0]
    return {
        "users": {
            "technician": (tech.username, tech_password),
            "admin": (admin.username, admin_password),
            "auditor": (auditor.username, auditor_password),
        },
        "pages": {
            None: [
                "/ui/login",
                "/consent",
                f"/consent/{consent_token(created)}",
                f"/consent/{consent_token(approved)}",
                f"/history/{history}",
            ],
            "technician": [
                "/ui/console",
                "/ui/new?system=helpdesk&ticket=HD-4711",
                f"/ui/sessions/{sid}",
                "/ui/account",
                "/ui/password",
                "/ui/devices",
                f"/ui/devices/{desk.device.id}",
            ],
            "admin": [
                "/ui/admin",
                "/ui/admin/users",
                "/ui/admin/tokens",
                "/ui/admin/groups",
                f"/ui/admin/groups/{gid}",
                "/ui/devices",
                f"/ui/devices/{desk.device.id}",
            ],
            "auditor": [
                "/ui/audit/sessions",
                "/ui/audit/sessions?event=session.requested&since=2025-01-01",
                "/ui/audit/tickets/helpdesk/HD-4711",
                "/ui/audit/checkpoint",
                "/ui/audit/security?event_type=all",
                "/ui/reports",
            ],
        },
    }


async def _keyboard(page: Any, path: str) -> list[str]:
    problems = []
    autofocus = await page.locator("[autofocus]").count() > 0
    await page.keyboard.press("Tab")
    first = await page.evaluate(FOCUS_JS)
    if not autofocus and (first is None or first["text"] != "Skip to content"):
        problems.append(f"{path}: the first Tab stop is {first}, not 'Skip to content'")
    for _ in range(TAB_STOPS):
        focused = await page.evaluate(FOCUS_JS)
        if focused is None:
            break
        if not focused["ring"]:
            problems.append(f"{path}: no visible focus on {focused}")
        await page.keyboard.press("Tab")
    return problems


async def test_every_page_has_labels_contrast_and_keyboard_focus(
    app: Any, client: httpx.AsyncClient, live_url: str, chromium: Any, db_url: str
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("page markup does not depend on the database; audited once, on SQLite")
    world = await _world(app, client)
    logins = Logins(chromium, live_url)
    problems: list[str] = []
    try:
        for role, paths in world["pages"].items():
            # Each role logs in once, through the form; the visitor's context has no login.
            context = (
                await logins.anonymous()
                if role is None
                else await logins.context(*world["users"][role])
            )
            page = await context.new_page()
            for path in paths:
                response = await page.goto(live_url + path)
                assert response is not None
                assert response.status == 200, (role, path, response.status)
                problems += [f"{path}: {p}" for p in await page.evaluate(AUDIT_JS)]
                problems += await _keyboard(page, path)
            await page.close()
            if role is None:
                await context.close()
    finally:
        await logins.close()
    assert problems == [], "\n".join(problems)
