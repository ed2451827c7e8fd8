"""HTTP routes of the auth domain (thin: parse, authorise, call the service).

Log in and out, and one's own account:

- ``POST /auth/login`` (JSON ``username``, ``password``, ``totp_code`` if the account has
  TOTP) → 200 user + CSRF token, and the ``sb_session`` cookie. Wrong password, unknown user
  and disabled account answer the same 401; a wait (see ``broker.auth.throttle``) → 429
  with ``Retry-After``. Failures are audited; refusals tallied per source and minute.
- ``POST /auth/logout`` → 204 (a browser session; the cookie is cleared)
- ``GET /auth/me`` → who is calling (user or token), with the CSRF token for a browser
- ``POST /auth/password`` → change one's own password (ends the user's other browsers)

A browser logged in with a one-time password may call only these three until the password
is changed (see ``broker.auth.deps``). Administration (``users:admin``):

- ``GET /users`` · ``POST /users`` (201, with a one-time password shown once)
- ``GET /users/{id}`` · ``PATCH /users/{id}`` (the last active admin cannot be demoted or
  disabled: 409)
- ``POST /users/{id}/reset-password`` (a new one-time password, shown once)
- ``POST /users/{id}/unlock`` (clears the account's failed-login waits; audited)
- ``GET /tokens`` · ``POST /tokens`` (201, the secret shown once) · ``DELETE /tokens/{id}``
  (revokes; the row stays for the record; 409 if already revoked)
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Path, Request, Response

from broker.auth import service, tokens
from broker.auth.deps import SESSION_COOKIE, SignedIn, client_ip, require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.auth.schemas import (
    LoginIn,
    LoginOut,
    MeOut,
    PasswordChangeIn,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
    UserCreate,
    UserList,
    UserOut,
    UserUnlocked,
    UserUpdate,
    UserWithPassword,
)
from broker.config import Settings
from broker.db.session import DbSession

log = structlog.get_logger("broker.auth")

router = APIRouter(tags=["auth"])
Admin = Annotated[Principal, Depends(require(Scope.users_admin))]
Id = Annotated[str, Path(min_length=1, max_length=36)]


def _set_session_cookie(request: Request, response: Response, secret: str) -> None:
    settings: Settings = request.app.state.settings
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=settings.web_session_hours * 3600,
        httponly=True,
        # lax, as the pages set it: a ticket system's deep link (top-level GET) stays logged in;
        # unsafe methods are guarded by the CSRF token, not by the cookie's SameSite.
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


# --- log in, log out, own account -----------------------------------------------------------


@router.post("/auth/login")
async def login(body: LoginIn, request: Request, response: Response, db: DbSession) -> LoginOut:
    result = await service.login(
        db, body.username, body.password, client_ip(request), totp_code=body.totp_code
    )
    _set_session_cookie(request, response, result.cookie_secret)
    log.info("auth.logged_in", user_id=result.user.id, username=result.user.username)
    return LoginOut(
        user=UserOut.of(result.user),
        csrf_token=result.csrf_token,
        must_change_password=result.user.must_change_password,
    )


@router.post("/auth/logout", status_code=204)
async def logout(request: Request, principal: SignedIn, db: DbSession) -> Response:
    await service.logout(db, principal, request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me")
async def me(principal: SignedIn, db: DbSession) -> MeOut:
    user = await service.get_user(db, principal.user_id) if principal.user_id else None
    return MeOut(
        kind=principal.kind,
        role=principal.role,
        name=principal.name,
        scopes=sorted(s.value for s in principal.scopes),
        user=UserOut.of(user) if user is not None else None,
        token_id=principal.token_id,
        ticket_system=principal.ticket_system,
        csrf_token=principal.csrf_token,
        must_change_password=principal.must_change_password,
    )


@router.post("/auth/password")
async def change_password(
    body: PasswordChangeIn, request: Request, principal: SignedIn, db: DbSession
) -> UserOut:
    user = await service.change_password(
        db,
        principal,
        current=body.current_password,
        new=body.new_password,
        cookie_secret=request.cookies.get(SESSION_COOKIE),
    )
    return UserOut.of(user)


# --- users (admin) --------------------------------------------------------------------------


@router.get("/users")
async def list_users(_: Admin, db: DbSession) -> UserList:
    return UserList(items=[UserOut.of(u) for u in await service.list_users(db)])


@router.post("/users", status_code=201)
async def create_user(body: UserCreate, principal: Admin, db: DbSession) -> UserWithPassword:
    user, password = await service.create_user_with_password(
        db, actor=principal.actor(), **body.model_dump(mode="json")
    )
    return UserWithPassword(user=UserOut.of(user), one_time_password=password)


@router.get("/users/{user_id}")
async def get_user(user_id: Id, _: Admin, db: DbSession) -> UserOut:
    return UserOut.of(await service.get_user(db, user_id))


@router.patch("/users/{user_id}")
async def update_user(user_id: Id, body: UserUpdate, principal: Admin, db: DbSession) -> UserOut:
    changes = body.model_dump(mode="json", include=body.model_fields_set)
    return UserOut.of(await service.update_user(db, principal.actor(), user_id, changes))


@router.post("/users/{user_id}/reset-password")
async def reset_password(user_id: Id, principal: Admin, db: DbSession) -> UserWithPassword:
    user, password = await service.reset_password_for(db, principal.actor(), user_id)
    return UserWithPassword(user=UserOut.of(user), one_time_password=password)


@router.post("/users/{user_id}/unlock")
async def unlock_user(user_id: Id, principal: Admin, db: DbSession) -> UserUnlocked:
    """Clear every failed-login wait of the account (its sources and its guard); audited."""
    user, cleared = await service.unlock(db, principal.actor(), user_id)
    return UserUnlocked(user=UserOut.of(user), cleared=cleared)


# --- API tokens (admin) ---------------------------------------------------------------------


@router.get("/tokens")
async def list_tokens(_: Admin, db: DbSession) -> TokenList:
    return TokenList(items=[TokenOut.of(t) for t in await tokens.list_tokens(db)])


@router.post("/tokens", status_code=201)
async def create_token(body: TokenCreate, principal: Admin, db: DbSession) -> TokenCreated:
    token, secret = await tokens.create_token(
        db, actor=principal.actor(), **body.model_dump(mode="json")
    )
    log.info("auth.token_created", id=token.id, prefix=token.prefix)
    return TokenCreated(**TokenOut.of(token).model_dump(), secret=secret)


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: Id, principal: Admin, db: DbSession) -> TokenOut:
    token = await tokens.revoke_token(db, actor=principal.actor(), token_id=token_id)
    return TokenOut.of(token)
