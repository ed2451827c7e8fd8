"""Account pages: logout, the (forced) password change, and the second factor on/off.

- ``POST /ui/logout``; ``GET|POST /ui/password``
- ``GET /ui/account`` and its forms ``POST /ui/account/totp/start|confirm|disable``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.auth import service as auth
from broker.auth import totp
from broker.auth.deps import SESSION_COOKIE, OptionalPrincipal
from broker.auth.models import User
from broker.auth.principal import Principal
from broker.auth.schemas import PASSWORD_MIN_LENGTH
from broker.db.session import DbSession
from broker.errors import BrokerError
from broker.ui.common import anyone, home_for, safe_next
from broker.ui.kit import LOGIN_PATH, login_redirect, page, page_user
from broker.ui.login import Secret, refused_keep

router = APIRouter(include_in_schema=False)


@router.post("/ui/logout", response_model=None)
async def logout(request: Request, principal: OptionalPrincipal, db: DbSession) -> Response:
    if principal is None:
        return login_redirect(request)
    await auth.logout(db, principal, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/ui/password", response_model=None)
async def password_page(
    request: Request,
    principal: OptionalPrincipal,
    db: DbSession,
    next: Annotated[str, Query(max_length=2000)] = "",
) -> Response:
    if principal is None or principal.kind != "user":
        return login_redirect(request)
    user = await db.get(User, principal.user_id)
    forced = bool(user and user.must_change_password)
    return page(
        request,
        "ui/password.html",
        title="Change your password",
        forced=forced,
        min_length=PASSWORD_MIN_LENGTH,
        next_url=safe_next(next),
    )


@router.post("/ui/password", response_model=None)
async def password_submit(
    request: Request,
    principal: OptionalPrincipal,
    db: DbSession,
    current: Secret = "",
    new: Secret = "",
    confirm: Secret = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    if principal is None or principal.kind != "user":
        return login_redirect(request)
    user = await db.get(User, principal.user_id)
    forced = bool(user and user.must_change_password)
    target = safe_next(next)
    context = {
        "title": "Change your password",
        "forced": forced,
        "min_length": PASSWORD_MIN_LENGTH,
        "next_url": target,
    }
    if new != confirm:
        return page(
            request, "ui/password.html", 422, error="the two new passwords differ", **context
        )
    try:
        await auth.change_password(
            db,
            principal,
            current=current,
            new=new,
            cookie_secret=request.cookies.get(SESSION_COOKIE),
        )
    except BrokerError as exc:
        await refused_keep(db, exc)
        status = 401 if exc.code == "not_authenticated" else 422
        return page(request, "ui/password.html", status, error=exc.detail, **context)
    return RedirectResponse(target or home_for(principal), status_code=303)


@router.get("/ui/account", response_model=None)
async def account(
    request: Request, who: Annotated[Principal, page_user(anyone)], db: DbSession
) -> Response:
    return await _account_page(request, db, who)


async def _account_page(
    request: Request, db: DbSession, who: Principal, status: int = 200, **extra: object
) -> HTMLResponse:
    enabled = await totp.is_enabled(db, who.user_id or "")
    pending = None if enabled else await totp.pending_secret(db, who.user_id or "")
    return page(
        request,
        "ui/account.html",
        status,
        title="Your account",
        totp_enabled=enabled,
        pending=pending,
        **extra,
    )


@router.post("/ui/account/totp/start", response_model=None)
async def totp_start(
    request: Request, who: Annotated[Principal, page_user(anyone)], db: DbSession
) -> Response:
    await totp.begin_enrollment(db, who)
    return await _account_page(request, db, who)


async def _second_factor(
    request: Request,
    who: Principal,
    db: DbSession,
    change: Callable[[DbSession, Principal], Awaitable[object]],
    notice: str,
) -> Response:
    """Confirm or turn off the second factor: a wrong code is kept (throttled) and shown."""
    try:
        await change(db, who)
    except BrokerError as exc:
        await refused_keep(db, exc)
        return await _account_page(request, db, who, 422, error=exc.detail)
    return await _account_page(request, db, who, notice=notice)


@router.post("/ui/account/totp/confirm", response_model=None)
async def totp_confirm(
    request: Request,
    who: Annotated[Principal, page_user(anyone)],
    db: DbSession,
    code: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    return await _second_factor(
        request,
        who,
        db,
        lambda d, w: totp.confirm_enrollment(d, w, code),
        "The second factor is on.",
    )


@router.post("/ui/account/totp/disable", response_model=None)
async def totp_disable(
    request: Request,
    who: Annotated[Principal, page_user(anyone)],
    db: DbSession,
    code: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    return await _second_factor(
        request, who, db, lambda d, w: totp.disable(d, w, code), "The second factor is off."
    )
