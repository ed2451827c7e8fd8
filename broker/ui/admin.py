"""The admin's pages: the status of ticket connectors and providers, users and roles, API
tokens (device groups, their policies, members and agent enrollment tokens are in
``broker.ui.admin_groups``).

Every page needs ``users:admin``; every form is a POST with ``csrf_token``. They call the
domain services directly (never the HTTP API), so the same rules and audit events apply.
A secret (one-time password, API token, enrollment token) is shown once, on the page that
answers the form, and never again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from broker.auth import service as auth
from broker.auth import tokens, totp
from broker.auth.models import Role
from broker.auth.permissions import Scope, grants_for
from broker.auth.principal import Principal
from broker.auth.schemas import UserUpdate
from broker.connectors import service as connectors
from broker.db.session import DbSession
from broker.devices import service as devices
from broker.errors import BrokerError, ValidationFailed
from broker.providers import registry as provider_registry
from broker.ui.common import is_admin, settings_of_request
from broker.ui.kit import page, page_user, refused

router = APIRouter(include_in_schema=False)
BASE = "/ui/admin"
Text = Annotated[str, Form(max_length=2000)]


def invalid(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()[:5]
    )


# --- overview and status ------------------------------------------------------------------


async def _provider_status() -> list[dict[str, Any]]:
    rows = []
    for name in sorted(provider_registry.available()):
        try:
            health = await provider_registry.get(name).check()
            rows.append({"name": name, "ok": health.ok, "detail": health.detail})
        except BrokerError as exc:  # shown to the admin; the other providers are still listed
            rows.append({"name": name, "ok": False, "detail": exc.detail})
    return rows


@router.get(BASE, response_model=None)
async def overview(
    request: Request, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    return page(
        request,
        "admin/status.html",
        title="Administration",
        connectors=await connectors.connectors_status(db),
        providers=await _provider_status(),
        users=len(await auth.list_users(db)),
        groups=len(await devices.list_groups(db, who)),
    )


# --- users --------------------------------------------------------------------------------


async def _users_page(
    request: Request, db: DbSession, status: int = 200, **extra: Any
) -> HTMLResponse:
    users = await auth.list_users(db)
    second = {u.id: await totp.is_enabled(db, u.id) for u in users}
    return page(
        request,
        "admin/users.html",
        status,
        title="Users and roles",
        users=users,
        totp=second,
        throttled=await auth.throttled_usernames(db),
        roles=list(Role.__members__),
        default_limit=settings_of_request(request).max_concurrent_sessions,
        **extra,
    )


@router.get(BASE + "/users", response_model=None)
async def users(
    request: Request, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    return await _users_page(request, db)


@router.post(BASE + "/users", response_model=None)
async def create_user(
    request: Request,
    who: Annotated[Principal, page_user(is_admin)],
    db: DbSession,
    username: Text = "",
    display_name: Text = "",
    role: Text = "",
    email: Text = "",
) -> Response:
    try:
        user, password = await auth.create_user_with_password(
            db,
            actor=who.actor(),
            username=username.strip().lower(),
            role=role or "technician",  # the least powerful staff role, never admin
            display_name=display_name.strip() or None,
            email=email.strip() or None,
        )
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _users_page(
            request, db, 422 if exc.code != "conflict" else 409, error=exc.detail
        )
    return await _users_page(
        request, db, secret={"what": f"One-time password for {user.username}", "value": password}
    )


@router.post(BASE + "/users/{user_id}", response_model=None)
async def update_user(
    request: Request,
    user_id: str,
    who: Annotated[Principal, page_user(is_admin)],
    db: DbSession,
    role: Text = "",
    active: Text = "",
    max_concurrent_sessions: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    limit = max_concurrent_sessions.strip()
    try:
        if limit and not limit.isdigit():
            raise ValidationFailed("max_concurrent_sessions: a whole number from 1 to 100")
        # Empty: the broker's default limit (SUPPORTBROKER_MAX_CONCURRENT_SESSIONS) applies.
        changes = UserUpdate.model_validate(
            {
                "role": role,
                "is_active": active == "on",
                "max_concurrent_sessions": int(limit) if limit else None,
            }
        ).model_dump(mode="json", include={"role", "is_active", "max_concurrent_sessions"})
        await auth.update_user(db, who.actor(), user_id, changes)
    except ValidationError as exc:
        return await _users_page(request, db, 422, error=invalid(exc))
    except BrokerError as exc:
        return await refused(request, db, exc)
    return RedirectResponse(BASE + "/users", status_code=303)


@router.post(BASE + "/users/{user_id}/password", response_model=None)
async def reset_password(
    request: Request, user_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    user = await auth.get_user(db, user_id)
    password = await auth.reset_password(db, who.actor(), user)
    return await _users_page(
        request,
        db,
        secret={"what": f"New one-time password for {user.username}", "value": password},
    )


@router.post(BASE + "/users/{user_id}/unlock", response_model=None)
async def unlock_user(
    request: Request, user_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    user, cleared = await auth.unlock(db, who.actor(), user_id)
    notice = f"Sign-in of {user.username} unlocked ({cleared} failed-login counter(s) cleared)."
    return await _users_page(request, db, notice=notice)


@router.post(BASE + "/users/{user_id}/totp", response_model=None)
async def reset_totp(
    request: Request, user_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    user = await auth.get_user(db, user_id)
    await totp.admin_reset(db, who.actor(), user)
    return RedirectResponse(BASE + "/users", status_code=303)


# --- API tokens ---------------------------------------------------------------------------


async def _tokens_page(
    request: Request, db: DbSession, status: int = 200, **extra: Any
) -> HTMLResponse:
    everyone = await auth.list_users(db)
    return page(
        request,
        "admin/tokens.html",
        status,
        title="API tokens",
        tokens=await tokens.list_tokens(db),
        people={u.id: u for u in everyone},  # the list names a token's user, not their id
        users=[u for u in everyone if u.is_active],
        scopes=[s.value for s in Scope],
        **extra,
    )


@router.get(BASE + "/tokens", response_model=None)
async def token_list(
    request: Request, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    return await _tokens_page(request, db)


@router.post(BASE + "/tokens", response_model=None)
async def token_create(
    request: Request, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    form = await request.form()
    owner = str(form.get("owner", "")).strip()
    days = str(form.get("expires_in_days", "")).strip()
    try:
        if days and not days.isdigit():
            raise ValidationFailed("expires_in_days: a whole number of days")
        system = str(form.get("system", "")).strip() or None
        user_id = owner or None
        scopes = [str(s) for s in form.getlist("scopes")]
        if user_id is not None and not scopes:
            scopes = sorted(grants_for((await auth.get_user(db, user_id)).role))
        token, secret = await tokens.create_token(
            db,
            actor=who.actor(),
            name=str(form.get("name", "")).strip()[:100] or "unnamed",
            scopes=scopes,
            owner_id=user_id,
            system=system or None,
            expires_in_days=int(days) if days else None,
        )
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _tokens_page(request, db, 422, error=exc.detail)
    return await _tokens_page(request, db, secret={"what": f"Token {token.name}", "value": secret})


@router.post(BASE + "/tokens/{token_id}/revoke", response_model=None)
async def token_revoke(
    request: Request, token_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    await tokens.revoke_token(db, actor=who.actor(), token_id=token_id)
    return RedirectResponse(BASE + "/tokens", status_code=303)
