"""What the login, console and admin pages share: templates, admission, refusals, signing.

Admission (:func:`admit`): an anonymous browser is sent to ``/ui/login?next=…``; a user who
must change their password is sent to ``/ui/password`` first; a user whose role the page
does not admit gets an HTML 403 page. Logged-in forms carry ``csrf_token`` and the cookie
authentication (``broker.auth.deps``) refuses a write without it. Forms used before login
(login, second factor) use a double-submit token in a short-lived cookie instead, and every
form post is also refused when the browser says it came from another origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.config import Settings
from broker.errors import BrokerError, NotFound, status_for
from web import STATIC_DIR, TEMPLATES_DIR

LOGIN_PATH = "/ui/login"
PASSWORD_PATH = "/ui/password"  # noqa: S105 - a page path, not a password
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
# Front-end packages served from the npm install (package.json), never copied into the repo.
UI_VENDOR = {"htmx.min.js": NODE_MODULES / "htmx.org/dist/htmx.min.js"}
STATIC = {"app.css": "text/css", "ui.js": "text/javascript", "times.js": "text/javascript"}

templates = Jinja2Templates(directory=TEMPLATES_DIR)
Rule = Callable[[Principal], bool]


def when(moment: datetime | None, seconds: bool = False) -> Markup:
    """A moment as ``<time>``: UTC in the markup and on hover, rewritten by
    ``/static/times.js`` into the reader's own time zone (the browser's). Without the script
    the UTC text stays, labelled as such; an ISO string is never shown as text."""
    if moment is None:
        return Markup("")
    utc = moment.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{}" title="{}" data-seconds="{}">{}</time>').format(
        stamp, shown, "1" if seconds else "", shown
    )


templates.env.filters["when"] = when


def is_technician(principal: Principal) -> bool:
    return principal.role == "technician" and principal.has(Scope.sessions_write)


def is_admin(principal: Principal) -> bool:
    return principal.has(Scope.users_admin)


def anyone(principal: Principal) -> bool:
    return principal.kind == "user"


def home_for(principal: Principal) -> str:
    if is_technician(principal):
        return "/ui/console"
    if is_admin(principal):
        return "/ui/admin"
    if principal.has(Scope.audit_read):
        return "/ui/audit/sessions"
    if principal.has(Scope.sessions_supervise):
        return "/ui/oversight"
    return "/ui/account"


def settings_of_request(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def page(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("csrf_token", principal.csrf_token if principal else None)
    return templates.TemplateResponse(request, name, context, status_code=status)


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)


def forbidden(request: Request, principal: Principal) -> HTMLResponse:
    return page(
        request,
        "ui/refused.html",
        403,
        title="Not allowed",
        detail=f"Your role ({principal.role}) may not open this page.",
    )


async def admit(
    request: Request, db: AsyncSession, principal: Principal | None, rule: Rule
) -> Principal | Response:
    """The principal if ``rule`` admits them, else the redirect or 403 page to return."""
    if principal is None or principal.kind != "user":
        return login_redirect(request)
    if principal.must_change_password:
        return RedirectResponse(PASSWORD_PATH, status_code=303)
    if not rule(principal):
        return forbidden(request, principal)
    return principal


async def refused(request: Request, db: AsyncSession, exc: BrokerError) -> HTMLResponse:
    """An error page for a domain refusal, keeping the audit record when the error says so."""
    if not exc.keep_changes:
        await db.rollback()
    status = status_for(exc)
    title = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Check the form"}
    return page(
        request, "ui/refused.html", status, title=title.get(status, "Refused"), detail=exc.detail
    )


def safe_next(target: str | None, default: str = "") -> str:
    """Only a local path may be a redirect target (no open redirect via ``next``)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target:
        return default
    return target


def cross_origin(request: Request) -> bool:
    """True when the browser says this post comes from another site (CSRF defence).

    ``Sec-Fetch-Site`` decides where the browser sends it (all current ones do); otherwise a
    non-opaque ``Origin`` must be ours. Our pages send no referrer, so browsers send
    ``Origin: null`` on our own forms: an opaque origin alone proves nothing either way.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False
    here = urlsplit(str(request.base_url))
    there = urlsplit(origin)
    return (there.scheme, there.netloc) != (here.scheme, here.netloc)


# --- signed values (short-lived cookies) --------------------------------------------------


def _mac(settings: Settings, purpose: str, body: bytes) -> str:
    key = hashlib.sha256(
        b"supportbroker/ui/"
        + purpose.encode()
        + b"\x00"
        + settings.secret_key.get_secret_value().encode()
    ).digest()
    return (
        base64.urlsafe_b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode().rstrip("=")
    )


def sign(settings: Settings, purpose: str, payload: dict[str, Any], max_age: int) -> str:
    data = {"p": payload, "exp": int(time.time()) + max_age}
    body = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()
    return f"{body}.{_mac(settings, purpose, body.encode())}"


def unsign(settings: Settings, purpose: str, value: str | None) -> dict[str, Any] | None:
    """The payload if ``value`` was signed for ``purpose`` and has not expired, else None."""
    if not value or "." not in value:
        return None
    body, _, mac = value.rpartition(".")
    if not hmac.compare_digest(mac, _mac(settings, purpose, body.encode())):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    if not isinstance(data, dict) or int(data.get("exp", 0)) < time.time():
        return None
    payload = data.get("p")
    return payload if isinstance(payload, dict) else None


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https"


# --- static files of the pages ------------------------------------------------------------

assets = APIRouter(include_in_schema=False)


@assets.get("/static/app.css")
async def app_css() -> FileResponse:
    return FileResponse(STATIC_DIR / "app.css", media_type=STATIC["app.css"])


@assets.get("/static/ui.js")
async def ui_js() -> FileResponse:
    return FileResponse(STATIC_DIR / "ui.js", media_type=STATIC["ui.js"])


@assets.get("/static/times.js")
async def times_js() -> FileResponse:
    return FileResponse(STATIC_DIR / "times.js", media_type=STATIC["times.js"])


@assets.get("/ui/vendor/{name}", response_model=None)
async def ui_vendor(name: str) -> Response:
    target = UI_VENDOR.get(name)
    if target is None or not target.exists():
        raise NotFound(f"{name} is not installed (run `npm install`)")
    return FileResponse(target, media_type="text/javascript")
