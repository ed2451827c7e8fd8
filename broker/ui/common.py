"""What the login, console and admin pages share: who may open which page, signing, assets.

Templates, admission and refusals are the page kit's (``broker/ui/kit.py``): an anonymous
browser is sent to ``/ui/login?next=…``; a user who must change their password is sent to
``/ui/password`` first; a user whose role the page does not admit gets an HTML 403 page.
Logged-in forms carry ``csrf_token`` and the cookie
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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.config import Settings
from broker.errors import NotFound
from web import STATIC_DIR

NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
# Front-end packages served from the npm install (package.json), never copied into the repo.
UI_VENDOR = {"htmx.min.js": NODE_MODULES / "htmx.org/dist/htmx.min.js"}
STATIC = {"app.css": "text/css", "ui.js": "text/javascript", "times.js": "text/javascript"}

Rule = Callable[[Principal], bool]


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
