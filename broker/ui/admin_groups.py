"""The admin's device-group pages: groups and their policies (unattended allowed, maximum
concurrent sessions, consent timeout, recording of input, ports, paths, pre-session
questions), members, and one-time agent enrollment tokens.

Every page needs ``users:admin``; every form is a POST with ``csrf_token``. An enrollment
token is shown once, on the page that answers the form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from broker.auth import service as auth
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.devices import service as devices
from broker.devices.schemas import GroupCreate, GroupUpdate
from broker.errors import BrokerError, ValidationFailed, status_for
from broker.evidence.service import Actor
from broker.gateway import dist
from broker.gateway import service as gateway
from broker.ui.admin import BASE, Text, invalid
from broker.ui.common import is_admin
from broker.ui.kit import page, page_user

router = APIRouter(include_in_schema=False)


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
        "approval_required": form.get("approval_required") == "on",
        "approval_priorities": _labels(form.get("approval_priorities")),
        "approval_categories": _labels(form.get("approval_categories")),
        "dual_control_playback": form.get("dual_control_playback") == "on",
    }


def _labels(value: object) -> list[str]:
    """Comma-separated ticket priorities or categories, blanks dropped."""
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


async def _groups_page(
    request: Request, db: DbSession, who: Principal, status: int = 200, **extra: Any
) -> HTMLResponse:
    return page(
        request,
        "admin/groups.html",
        status,
        title="Device groups and policies",
        groups=await devices.list_groups(db, who),
        # The end user's history links (README "History"): a broker-wide policy, shown here.
        history_days=request.app.state.settings.consent_link_retention_days,
        **extra,
    )


@router.get(BASE + "/groups", response_model=None)
async def groups(
    request: Request, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    return await _groups_page(request, db, who)


@router.post(BASE + "/groups", response_model=None)
async def group_create(
    request: Request, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    try:
        body = GroupCreate.model_validate(group_fields(await request.form()))
        group = await devices.create_group(db, actor=who.actor(), **body.model_dump())
    except ValidationError as exc:
        return await _groups_page(request, db, who, 422, error=invalid(exc))
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _groups_page(request, db, who, status_for(exc), error=exc.detail)
    return RedirectResponse(f"{BASE}/groups/{group.id}", status_code=303)


async def _group_page(
    request: Request, db: DbSession, group_id: str, status: int = 200, **extra: Any
) -> HTMLResponse:
    group = await devices.get_group(db, group_id)
    members = await devices.group_members(db, group.id)
    member_ids = {m.id for m in members}
    candidates = [
        u
        for u in await auth.list_users(db)
        if u.role in devices.GROUP_ROLES and u.id not in member_ids
    ]
    return page(
        request,
        "admin/group.html",
        status,
        title=f"Device group {group.name}",
        group=group,
        members=members,
        candidates=candidates,
        gateway_address=gateway_address(request),
        agent_install=agent_install(request),
        **extra,
    )


@router.get(BASE + "/groups/{group_id}", response_model=None)
async def group_detail(
    request: Request, group_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    return await _group_page(request, db, group_id)


@router.post(BASE + "/groups/{group_id}", response_model=None)
async def group_update(
    request: Request, group_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    try:
        body = GroupUpdate.model_validate(group_fields(await request.form()))
        await devices.update_group(
            db, actor=who.actor(), group_id=group_id, changes=body.model_dump(exclude_unset=True)
        )
    except ValidationError as exc:
        return await _group_page(request, db, group_id, 422, error=invalid(exc))
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _group_page(request, db, group_id, status_for(exc), error=exc.detail)
    return RedirectResponse(f"{BASE}/groups/{group_id}", status_code=303)


async def _membership(
    request: Request,
    who: Principal,
    db: DbSession,
    group_id: str,
    change: Callable[[DbSession, Actor], Awaitable[object]],
) -> Response:
    """Add or remove a member, then back to the group's page (a refusal is shown there)."""
    await change(db, who.actor())
    return RedirectResponse(f"{BASE}/groups/{group_id}", status_code=303)


@router.post(BASE + "/groups/{group_id}/members", response_model=None)
async def member_add(
    request: Request,
    group_id: str,
    who: Annotated[Principal, page_user(is_admin)],
    db: DbSession,
    user_id: Text = "",
) -> Response:
    return await _membership(
        request,
        who,
        db,
        group_id,
        lambda d, actor: devices.add_member(d, actor=actor, group_id=group_id, user_id=user_id),
    )


@router.post(BASE + "/groups/{group_id}/members/{user_id}/remove", response_model=None)
async def member_remove(
    request: Request,
    group_id: str,
    user_id: str,
    who: Annotated[Principal, page_user(is_admin)],
    db: DbSession,
) -> Response:
    return await _membership(
        request,
        who,
        db,
        group_id,
        lambda d, actor: devices.remove_member(d, actor=actor, group_id=group_id, user_id=user_id),
    )


@router.post(BASE + "/groups/{group_id}/enrollment-token", response_model=None)
async def enrollment_token(
    request: Request,
    group_id: str,
    who: Annotated[Principal, page_user(is_admin)],
    db: DbSession,
    hours: Annotated[str, Form(max_length=10)] = "24",
) -> Response:
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
        return await _group_page(request, db, group_id, status_for(exc), error=exc.detail)
    running = getattr(request.app.state, "gateway", None)
    return await _group_page(
        request,
        db,
        group_id,
        secret={
            "what": f"Enrollment token for {issued.group}",
            "until": datetime.fromisoformat(issued.expires_at),  # shown in the reader's zone
            "value": issued.token,
        },
        enrollment={
            "gateway": gateway_address(request),
            "fingerprint": running.fingerprint if running else None,
        },
    )


def agent_install(request: Request) -> str:
    """The command that installs the agent on a device from this broker (its own wheel)."""
    return f"pip install {request.app.state.settings.base_url}{dist.download_path()}"


def gateway_address(request: Request) -> str:
    """Where a device's agent dials: the gateway's host, or the host users reach the broker
    by when the gateway listens on every address (0.0.0.0 is no place to dial)."""
    settings = request.app.state.settings
    running = getattr(request.app.state, "gateway", None)
    host = settings.gateway_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        host = urlsplit(settings.base_url).hostname or "localhost"
    return f"{host}:{running.port if running else settings.gateway_port}"
