"""What the auditor and report pages share: templates, who may see which page, refusals.

Admission and refusals are the page kit's (``broker/ui/kit.py``), as for every page: an
anonymous browser (or a caller that is no user) is redirected to ``/ui/login`` with the page
as ``next``, a user who must change their password to ``/ui/password``, a signed-in user
without the right role gets an HTML 403 page. Domain errors are shown on an error page with
the status the JSON API would use (``broker.errors.status_for``), after rolling back unless
the refusal must be kept.

Who sees what (docs/PRODUCT.md: the auditor reads, the admin is not trusted by the log):
- audit views with content (timeline, session detail, replay, checkpoint): ``audit:read``,
  i.e. auditors only; admins get 403 like technicians;
- the session search (metadata only, what ``GET /api/v1/sessions`` already shows them) and the
  reports: auditors and admins; the admin's search rows lead to the erasure page instead;
- erasing a ticket's content: ``users:admin`` (the evidence API's rule).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse

import web
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.evidence.events import event_words
from broker.ui import kit

# The audit views' own filters, on the kit's one templates object.
# Event names as words ("The end user refused the request"), from the catalogue.
kit.templates.env.filters["event_words"] = event_words


ISO_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _moment(value: str) -> str:
    """A timestamp inside a payload, shown like every other time (the reader's zone)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return kit.when(moment if moment.tzinfo else moment.replace(tzinfo=UTC), seconds=True)


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


kit.templates.env.globals["payload_rows"] = payload_rows
# Recordings carry their times as ISO text: shown like every other time; in an <option>
# (text only) as UTC words.
kit.templates.env.filters["when_iso"] = lambda value: _moment(str(value)) if value else ""
kit.templates.env.filters["utc_iso"] = lambda value: (
    datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if value
    else ""
)


def can_audit(principal: Principal) -> bool:
    return principal.has(Scope.audit_read)


def can_erase(principal: Principal) -> bool:
    return principal.has(Scope.users_admin)


def can_oversee(principal: Principal) -> bool:
    """Search sessions and read reports: auditors and admins, and supervisors (whose
    reports, and session search, cover only their device groups)."""
    return can_audit(principal) or can_erase(principal) or principal.has(Scope.sessions_supervise)


def page(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    """An audit view: the kit's page, with times to the second."""
    context.setdefault(kit.SECONDS, True)
    return kit.page(request, name, status, **context)


def audit_user(rule: kit.Rule) -> Any:
    """The kit's page-auth dependency with the audit views' refusal page."""
    return kit.page_user(rule, kit.AUDIT_REFUSAL)


def script(name: str) -> FileResponse:
    return FileResponse(Path(web.__file__).parent / "static" / name, media_type="text/javascript")
