"""The admin's pages: users and roles, API tokens, device groups with their policies and
members, agent enrollment tokens, and the status of ticket connectors and providers.

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
from starlette.datastructures import FormData

from broker.auth import service as auth
from broker.auth import tokens, totp
from broker.auth.deps import OptionalPrincipal
from broker.auth.models import Role
from broker.auth.permissions import Scope, grants_for
from broker.auth.principal import Principal
from broker.connectors import service as connectors
from broker.db.session import DbSession
from broker.devices import service as devices
from broker.devices.schemas import GroupCreate, GroupUpdate
from broker.errors import BrokerError, ValidationFailed
from broker.gateway import service as gateway
from broker.providers import registry as provider_registry
from broker.ui.common import admit, is_admin, page, refused

router = APIRouter(include_in_schema=False)
BASE = "/ui/admin"
Text = Annotated[str, Form(max_length=2000)]


def _invalid(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()[:5]
    )


async def _admin(
    request: Request, db: DbSession, principal: Principal | None
) -> Principal | Response:
    return await admit(request, db, principal, is_admin)


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
async def overview(request: Request, principal: OptionalPrincipal, db: DbSession) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
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
        roles=list(Role.__members__),
        **extra,
    )


@router.get(BASE + "/users", response_model=None)
async def users(request: Request, principal: OptionalPrincipal, db: DbSession) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    return await _users_page(request, db)


@router.post(BASE + "/users", response_model=None)
async def create_user(
    request: Request,
    principal: OptionalPrincipal,
    db: DbSession,
    username: Text = "",
    display_name: Text = "",
    role: Text = "",
    email: Text = "",
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        user, password = await auth.create_user_with_password(
            db,
            actor=who.actor(),
            username=username.strip().lower(),
            role=role,
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
    principal: OptionalPrincipal,
    db: DbSession,
    role: Text = "",
    active: Text = "",
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        await auth.update_user(
            db, who.actor(), user_id, {"role": role, "is_active": active == "on"}
        )
    except BrokerError as exc:
        return await refused(request, db, exc)
    return RedirectResponse(BASE + "/users", status_code=303)


@router.post(BASE + "/users/{user_id}/password", response_model=None)
async def reset_password(
    request: Request, user_id: str, principal: OptionalPrincipal, db: DbSession
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        user = await auth.get_user(db, user_id)
        password = await auth.reset_password(db, who.actor(), user)
    except BrokerError as exc:
        return await refused(request, db, exc)
    return await _users_page(
        request,
        db,
        secret={"what": f"New one-time password for {user.username}", "value": password},
    )


@router.post(BASE + "/users/{user_id}/totp", response_model=None)
async def reset_totp(
    request: Request, user_id: str, principal: OptionalPrincipal, db: DbSession
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        user = await auth.get_user(db, user_id)
        await totp.admin_reset(db, who.actor(), user)
    except BrokerError as exc:
        return await refused(request, db, exc)
    return RedirectResponse(BASE + "/users", status_code=303)


# --- API tokens ---------------------------------------------------------------------------


async def _tokens_page(
    request: Request, db: DbSession, status: int = 200, **extra: Any
) -> HTMLResponse:
    return page(
        request,
        "admin/tokens.html",
        status,
        title="API tokens",
        tokens=await tokens.list_tokens(db),
        users=[u for u in await auth.list_users(db) if u.is_active],
        scopes=[s.value for s in Scope],
        **extra,
    )


@router.get(BASE + "/tokens", response_model=None)
async def token_list(request: Request, principal: OptionalPrincipal, db: DbSession) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    return await _tokens_page(request, db)


@router.post(BASE + "/tokens", response_model=None)
async def token_create(request: Request, principal: OptionalPrincipal, db: DbSession) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
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
    request: Request, token_id: str, principal: OptionalPrincipal, db: DbSession
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        await tokens.revoke_token(db, actor=who.actor(), token_id=token_id)
    except BrokerError as exc:
        return await refused(request, db, exc)
    return RedirectResponse(BASE + "/tokens", status_code=303)


# --- device groups ------------------------------------------------------------------------


def group_fields(form: FormData) -> dict[str, Any]:
    """The policy form as the devices schemas expect it (ports comma-separated, one path and
    one ``id: question`` per line)."""
    ports_text = str(form.get("allowed_ports", ""))
    ports = []
    for part in ports_text.replace(",", " ").split():
        if not part.isdigit():
            raise ValidationFailed(f"allowed_ports: {part!r} is not a port number")
        ports.append(int(part))
    questions = []
    for line in str(form.get("questions", "")).splitlines():
        if line.strip():
            qid, sep, label = line.partition(":")
            if not sep:
                raise ValidationFailed(
                    f"questions: write each as 'id: question' ({line.strip()!r})"
                )
            questions.append({"id": qid.strip(), "label": label.strip()})
    timeout = str(form.get("consent_timeout_seconds", "")).strip()
    if timeout and not timeout.isdigit():
        raise ValidationFailed("consent_timeout_seconds: a whole number of seconds")
    return {
        "name": str(form.get("name", "")).strip(),
        "description": str(form.get("description", "")).strip(),
        "unattended_allowed": form.get("unattended_allowed") == "on",
        "consent_timeout_seconds": int(timeout) if timeout else None,
        "record_input": form.get("record_input") == "on",
        "allowed_ports": ports,
        "allowed_paths": [
            p.strip() for p in str(form.get("allowed_paths", "")).splitlines() if p.strip()
        ],
        "questions": questions,
    }


async def _groups_page(
    request: Request, db: DbSession, who: Principal, status: int = 200, **extra: Any
) -> HTMLResponse:
    return page(
        request,
        "admin/groups.html",
        status,
        title="Device groups and policies",
        groups=await devices.list_groups(db, who),
        **extra,
    )


@router.get(BASE + "/groups", response_model=None)
async def groups(request: Request, principal: OptionalPrincipal, db: DbSession) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    return await _groups_page(request, db, who)


@router.post(BASE + "/groups", response_model=None)
async def group_create(request: Request, principal: OptionalPrincipal, db: DbSession) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        body = GroupCreate.model_validate(group_fields(await request.form()))
        group = await devices.create_group(db, actor=who.actor(), **body.model_dump())
    except ValidationError as exc:
        return await _groups_page(request, db, who, 422, error=_invalid(exc))
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _groups_page(request, db, who, 422, error=exc.detail)
    return RedirectResponse(f"{BASE}/groups/{group.id}", status_code=303)


async def _group_page(
    request: Request, db: DbSession, group_id: str, status: int = 200, **extra: Any
) -> HTMLResponse:
    group = await devices.get_group(db, group_id)
    members = await devices.group_members(db, group.id)
    member_ids = {m.id for m in members}
    candidates = [
        u for u in await auth.list_users(db) if u.role == "technician" and u.id not in member_ids
    ]
    return page(
        request,
        "admin/group.html",
        status,
        title=f"Device group {group.name}",
        group=group,
        members=members,
        candidates=candidates,
        **extra,
    )


@router.get(BASE + "/groups/{group_id}", response_model=None)
async def group_detail(
    request: Request, group_id: str, principal: OptionalPrincipal, db: DbSession
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        return await _group_page(request, db, group_id)
    except BrokerError as exc:
        return await refused(request, db, exc)


@router.post(BASE + "/groups/{group_id}", response_model=None)
async def group_update(
    request: Request, group_id: str, principal: OptionalPrincipal, db: DbSession
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        body = GroupUpdate.model_validate(group_fields(await request.form()))
        await devices.update_group(
            db, actor=who.actor(), group_id=group_id, changes=body.model_dump()
        )
    except ValidationError as exc:
        return await _group_page(request, db, group_id, 422, error=_invalid(exc))
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _group_page(request, db, group_id, 422, error=exc.detail)
    return RedirectResponse(f"{BASE}/groups/{group_id}", status_code=303)


@router.post(BASE + "/groups/{group_id}/members", response_model=None)
async def member_add(
    request: Request, group_id: str, principal: OptionalPrincipal, db: DbSession, user_id: Text = ""
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        await devices.add_member(db, actor=who.actor(), group_id=group_id, user_id=user_id)
    except BrokerError as exc:
        return await refused(request, db, exc)
    return RedirectResponse(f"{BASE}/groups/{group_id}", status_code=303)


@router.post(BASE + "/groups/{group_id}/members/{user_id}/remove", response_model=None)
async def member_remove(
    request: Request, group_id: str, user_id: str, principal: OptionalPrincipal, db: DbSession
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        await devices.remove_member(db, actor=who.actor(), group_id=group_id, user_id=user_id)
    except BrokerError as exc:
        return await refused(request, db, exc)
    return RedirectResponse(f"{BASE}/groups/{group_id}", status_code=303)


@router.post(BASE + "/groups/{group_id}/enrollment-token", response_model=None)
async def enrollment_token(
    request: Request,
    group_id: str,
    principal: OptionalPrincipal,
    db: DbSession,
    hours: Annotated[str, Form(max_length=10)] = "24",
) -> Response:
    who = await _admin(request, db, principal)
    if isinstance(who, Response):
        return who
    try:
        try:
            lifetime = float(hours)
        except ValueError as exc:
            raise ValidationFailed("hours: a number of hours") from exc
        issued = await gateway.create_enrollment_token(
            db, group=group_id, actor=who.actor(), hours=lifetime
        )
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _group_page(request, db, group_id, 422, error=exc.detail)
    settings = request.app.state.settings
    running = getattr(request.app.state, "gateway", None)
    where = f"{settings.gateway_host}:{running.port if running else settings.gateway_port}"
    return await _group_page(
        request,
        db,
        group_id,
        secret={
            "what": f"Enrollment token for {issued.group} (valid until {issued.expires_at})",
            "value": issued.token,
        },
        enrollment={"gateway": where, "fingerprint": running.fingerprint if running else None},
    )
