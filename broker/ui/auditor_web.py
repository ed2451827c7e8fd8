"""What the auditor and report pages share: templates, who may see which page, refusals.

A page never answers an anonymous browser with JSON: it redirects to ``/ui/login`` with the
page as ``next``. A signed-in user without the right role gets an HTML 403 page. Domain
errors raised while building a page are shown on an error page with the status the JSON API
would use (``broker.errors.status_for``), after rolling back unless the refusal must be kept.

Who sees what (PRODUCT.md: the auditor reads, the admin is not trusted by the log):
- audit views with content (timeline, session detail, replay, checkpoint): ``audit:read``,
  i.e. auditors only; admins get 403 like technicians;
- the session search (metadata only, what ``GET /api/v1/sessions`` already shows them) and the
  reports: auditors and admins; the admin's search rows lead to the erasure page instead;
- erasing a ticket's content: ``users:admin`` (the evidence API's rule).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

import web
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.errors import BrokerError, status_for
from broker.evidence.events import event_words
from broker.ui.common import when

templates = Jinja2Templates(directory=Path(web.__file__).parent / "templates")
LOGIN_PATH = "/ui/login"


def _when(moment: datetime | None) -> Markup:
    return when(moment, seconds=True)  # the audit views show seconds


templates.env.filters["when"] = _when
# Event names as words ("The end user refused the request"), from the catalogue.
templates.env.filters["event_words"] = event_words


ISO_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _moment(value: str) -> str:
    """A timestamp inside a payload, shown like every other time (the reader's zone)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return when(moment if moment.tzinfo else moment.replace(tzinfo=UTC), seconds=True)


def payload_rows(payload: Any) -> list[tuple[str, str]]:
    """A record's payload as label/value rows for a table: nested objects flattened with
    dotted labels, lists joined, so an auditor reads it without parsing JSON."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                words = str(key).replace("_", " ")
                walk(f"{prefix} · {words}" if prefix else words, inner)
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value if not isinstance(v, dict | list))
            nested = [v for v in value if isinstance(v, dict | list)]
            rows.append((prefix, text if not nested else json.dumps(value, ensure_ascii=False)))
        elif isinstance(value, str) and ISO_MOMENT.match(value):
            rows.append((prefix, _moment(value)))
        else:
            rows.append((prefix, "—" if value is None or value == {} else str(value)))

    walk("", payload or {})
    return rows


templates.env.globals["payload_rows"] = payload_rows
# Recordings carry their times as ISO text: shown like every other time; in an <option>
# (text only) as UTC words.
templates.env.filters["when_iso"] = lambda value: _moment(str(value)) if value else ""
templates.env.filters["utc_iso"] = lambda value: (
    datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if value
    else ""
)


Rule = Callable[[Principal], bool]


def can_audit(principal: Principal) -> bool:
    return principal.has(Scope.audit_read)


def can_erase(principal: Principal) -> bool:
    return principal.has(Scope.users_admin)


def can_oversee(principal: Principal) -> bool:
    """Search sessions and read reports: auditors and admins, and supervisors (whose
    reports, and session search, cover only their device groups)."""
    return can_audit(principal) or can_erase(principal) or principal.has(Scope.sessions_supervise)


def page(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("csrf_token", principal.csrf_token if principal else None)
    return templates.TemplateResponse(request, name, context, status_code=status)


def admit(request: Request, principal: Principal | None, rule: Rule) -> Principal | Response:
    """The principal if ``rule`` admits them; else the login redirect or a 403 page."""
    if principal is None:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
    if not rule(principal):
        return page(
            request,
            "auditor/refused.html",
            403,
            title="Not allowed",
            detail=f"Your role ({principal.role}) may not open this page.",
        )
    return principal


async def refused(request: Request, db: AsyncSession, exc: BrokerError) -> HTMLResponse:
    """An error page for a domain refusal, keeping the audit record when the error says so."""
    if not exc.keep_changes:
        await db.rollback()
    status = status_for(exc)
    title = {403: "Not allowed", 404: "Not found", 422: "Check the form"}.get(status, "Refused")
    return page(request, "auditor/refused.html", status, title=title, detail=exc.detail)


def script(name: str) -> FileResponse:
    return FileResponse(Path(web.__file__).parent / "static" / name, media_type="text/javascript")
