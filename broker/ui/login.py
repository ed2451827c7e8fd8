"""Login pages: password (+ TOTP when enabled) and what the other login pages share.

- ``GET|POST /ui/login`` (``GET /login`` leads there); ``GET|POST /ui/login/totp`` (second
  step, after the password)
- ``GET /ui`` (and ``/``): the home page of the caller's role

Single sign-on is in ``broker.ui.sso``; logout, password change and the account page in
``broker.ui.account``. Between the password and the second factor the browser holds a
signed, five-minute cookie naming the user; no web session exists until both steps pass.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.auth import oidc, totp
from broker.auth import service as auth
from broker.auth.deps import SESSION_COOKIE, OptionalPrincipal, client_ip
from broker.auth.models import User
from broker.auth.permissions import grants_for
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.errors import BrokerError, PermissionDenied, RateLimited
from broker.ui.common import (
    anyone,
    cross_origin,
    home_for,
    safe_next,
    secure_cookies,
    settings_of_request,
    sign,
    unsign,
)
from broker.ui.kit import LOGIN_PATH, page, page_user

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "sb_login_csrf"
MFA_COOKIE = "sb_mfa"
OIDC_COOKIE = "sb_oidc"
MFA_SECONDS = 300
OIDC_SECONDS = 600
Text = Annotated[str, Form(max_length=200)]
Secret = Annotated[str, Form(max_length=1000)]


def oidc_settings(request: Request) -> oidc.OidcSettings:
    """From the environment; a test app may put its own on ``app.state.oidc_settings``."""
    configured = getattr(request.app.state, "oidc_settings", None)
    return configured if isinstance(configured, oidc.OidcSettings) else oidc.OidcSettings()


def login_form(
    request: Request,
    status: int = 200,
    *,
    error: str | None = None,
    next_url: str = "",
    username: str = "",
) -> HTMLResponse:
    """The login page with a fresh double-submit token (cookie + hidden field)."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    sso = oidc_settings(request)
    response = page(
        request,
        "ui/login.html",
        status,
        title="Sign in",
        login_csrf=token,
        error=error,
        next_url=next_url,
        username=username,
        sso_label=sso.label if sso.enabled else None,
    )
    _set_login_csrf(request, response, token)
    return response


def _set_login_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path="/ui/login",
    )


def _pre_login_check(request: Request, sent: str) -> None:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    if cross_origin(request) or not cookie or not secrets.compare_digest(cookie, sent):
        raise PermissionDenied("missing or wrong CSRF token")


async def logged_in(request: Request, db: DbSession, user: User, next_url: str) -> Response:
    ip = client_ip(request)
    secret, _ = await auth.start_web_session(db, user, ip)
    target = next_url
    if user.must_change_password:  # the page asked for (a ticket's deep link) comes after
        target = "/ui/password" + (f"?next={quote(next_url, safe='')}" if next_url else "")
    if not target:
        scopes = grants_for(user.role)
        target = home_for(Principal(kind="user", role=user.role, name=user.username, scopes=scopes))
    response = RedirectResponse(target, status_code=303)
    hours = settings_of_request(request).web_session_hours
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=hours * 3600,
        httponly=True,
        # lax: a ticket system's deep link (a top-level GET from another site) stays logged in
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
    )
    response.delete_cookie(MFA_COOKIE, path="/ui/login")
    response.delete_cookie(OIDC_COOKIE, path="/ui/login")
    return response


@router.get("/", response_model=None)
@router.get("/ui", response_model=None)
async def home(
    request: Request, who: Annotated[Principal, page_user(anyone)], db: DbSession
) -> Response:
    return RedirectResponse(home_for(who), status_code=303)


@router.get("/login", response_model=None)
async def login_alias(request: Request) -> Response:
    """``/login``: the address people type (and ``supportbroker serve`` prints)."""
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(LOGIN_PATH + query, status_code=307)


@router.get(LOGIN_PATH, response_model=None)
async def login_page(
    request: Request,
    principal: OptionalPrincipal,
    next: Annotated[str, Query(max_length=2000)] = "",
) -> Response:
    target = safe_next(next)
    if principal is not None and principal.kind == "user":
        return RedirectResponse(target or home_for(principal), status_code=303)
    return login_form(request, next_url=target)


@router.post(LOGIN_PATH, response_model=None)
async def login_submit(
    request: Request,
    db: DbSession,
    username: Text = "",
    password: Secret = "",
    csrf_token: Secret = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    _pre_login_check(request, csrf_token)
    target = safe_next(next)
    try:
        user = await auth.authenticate(db, username, password, client_ip(request))
    except BrokerError as exc:
        await refused_keep(db, exc)
        status = 429 if exc.code == "rate_limited" else 401
        form = login_form(request, status, error=exc.detail, next_url=target, username=username)
        return _with_retry_after(form, exc)
    if await totp.is_enabled(db, user.id):
        response: Response = RedirectResponse("/ui/login/totp", status_code=303)
        value = sign(
            settings_of_request(request), "mfa", {"uid": user.id, "next": target}, MFA_SECONDS
        )
        response.set_cookie(
            MFA_COOKIE,
            value,
            max_age=MFA_SECONDS,
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
            path="/ui/login",
        )
        return response
    return await logged_in(request, db, user, target)


async def refused_keep(db: DbSession, exc: BrokerError) -> None:
    """Keep the audit record and counters of a refusal that must be remembered."""
    if not exc.keep_changes:
        await db.rollback()


def _pending_mfa(request: Request) -> dict[str, str] | None:
    data = unsign(settings_of_request(request), "mfa", request.cookies.get(MFA_COOKIE))
    if data is None or not isinstance(data.get("uid"), str):
        return None
    return {"uid": str(data["uid"]), "next": safe_next(str(data.get("next") or ""))}


def _totp_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = page(
        request, "ui/totp.html", status, title="Second factor", login_csrf=token, error=error
    )
    _set_login_csrf(request, response, token)
    return response


@router.get("/ui/login/totp", response_model=None)
async def totp_page(request: Request) -> Response:
    if _pending_mfa(request) is None:
        return RedirectResponse(LOGIN_PATH, status_code=303)
    return _totp_form(request)


@router.post("/ui/login/totp", response_model=None)
async def totp_submit(
    request: Request,
    db: DbSession,
    code: Annotated[str, Form(max_length=20)] = "",
    csrf_token: Secret = "",
) -> Response:
    _pre_login_check(request, csrf_token)
    pending = _pending_mfa(request)
    if pending is None:
        return RedirectResponse(LOGIN_PATH, status_code=303)
    user = await db.get(User, pending["uid"])
    if user is None or not user.is_active:
        return RedirectResponse(LOGIN_PATH, status_code=303)
    try:
        await totp.verify_login_code(db, user, code, client_ip(request))
    except BrokerError as exc:
        await refused_keep(db, exc)
        form = _totp_form(request, 429 if exc.code == "rate_limited" else 401, exc.detail)
        return _with_retry_after(form, exc)
    return await logged_in(request, db, user, pending["next"])


def _with_retry_after(response: Response, exc: BrokerError) -> Response:
    """A throttled form says when to come back, as the API's 429 does."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response
