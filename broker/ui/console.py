"""The technician's console: open sessions (live), the request form, the waiting screen.

- ``GET /ui/console`` and the fragment ``GET /ui/console/sessions`` (htmx polls it); it also
  lists the open sessions the technician was invited to help on (``broker.sessions.invitations``)
- ``GET /ui/new?system=…&ticket=…``: the request form; ``GET /sessions/new`` is where the
  connectors' ticket deep link (``/t/{system}/{id}/connect``) lands and forwards here
- ``GET /ui/new/ticket``: the ticket as its system sees it (htmx, while typing)
- ``POST /ui/sessions``: request; the consent code is shown on the next page, once
- ``GET /ui/sessions/{id}`` and its fragment ``/status`` (htmx polls while it can change),
  for its technician, an invited expert (who gets "Join the terminal") or an admin;
  ``POST /ui/sessions/{id}/start|end|cancel``

The code is a secret the broker keeps only as a hash: it reaches the waiting screen in a
signed, HTTP-only cookie scoped to that session's page and living as long as the request.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.connectors import service as connectors
from broker.connectors.registry import registry_for
from broker.consent import service as consent_service
from broker.db.base import utcnow
from broker.db.session import DbSession
from broker.devices import service as devices
from broker.devices.repository import DeviceFilter
from broker.errors import BrokerError, status_for
from broker.flows import approval
from broker.flows import devices as device_flows
from broker.providers import offers
from broker.providers import service as providers
from broker.sessions import gate
from broker.sessions import invitations as invites
from broker.sessions import service as sessions
from broker.sessions.repository import SessionFilter, SessionRecord
from broker.sessions.schemas import SessionCreate
from broker.sessions.states import OPEN_STATES, SessionState
from broker.ui.common import (
    is_admin,
    is_technician,
    secure_cookies,
    settings_of_request,
    sign,
    unsign,
)
from broker.ui.kit import page, page_user

router = APIRouter(include_in_schema=False)
CODE_COOKIE = "sb_code"
DURATIONS = (15, 30, 60, 120, 240, 480)
CAPABILITY_WORDS = offers.TECHNICIAN_WORDS
# The request form's text fields, as the page names them.
FORM_FIELDS = ("system", "ticket", "subject", "priority", "category", "device_id", "reason")
Ref = Annotated[str, Query(max_length=100)]


def technician_or_admin(principal: Principal) -> bool:
    return is_technician(principal) or is_admin(principal)


def _invalid(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()[:5]
    )


# --- the list -----------------------------------------------------------------------------


async def _my_sessions(db: DbSession, who: Principal) -> dict[str, list[SessionRecord]]:
    records = await sessions.list_sessions(db, who, SessionFilter(), limit=50, offset=0)
    open_ = [r for r in records if SessionState(r.session.state) in OPEN_STATES]
    done = [r for r in records if SessionState(r.session.state) not in OPEN_STATES][:10]
    invited = await invites.invitations_for(db, who)
    return {"open_sessions": open_, "recent_sessions": done, "invited_sessions": invited}


@router.get("/ui/console", response_model=None)
async def console(
    request: Request, who: Annotated[Principal, page_user(is_technician)], db: DbSession
) -> Response:
    return page(request, "ui/console.html", title="My sessions", **await _my_sessions(db, who))


@router.get("/ui/console/sessions", response_model=None)
async def console_fragment(
    request: Request, who: Annotated[Principal, page_user(is_technician)], db: DbSession
) -> Response:
    return page(request, "ui/_sessions.html", **await _my_sessions(db, who))


# --- the request form ---------------------------------------------------------------------


@router.get("/sessions/new", response_model=None)
async def deep_link(system: Ref = "", ticket: Ref = "") -> Response:
    """Where ``/t/{system}/{id}/connect`` (broker.connectors.router) sends the browser."""
    return RedirectResponse(f"/ui/new?{urlencode({'system': system, 'ticket': ticket})}", 303)


async def _form_context(db: DbSession, who: Principal, **values: Any) -> dict[str, Any]:
    # With the gateway's presence: the technician sees which devices are online before asking.
    listed, _ = await device_flows.inventory(db, who, DeviceFilter(), limit=500, offset=0)
    found = [x.device for x in listed]
    groups = {x.group.id: x.group for x in listed}
    defaults = dict.fromkeys(FORM_FIELDS, "")
    defaults.update({k: v for k, v in values.items() if v is not None})
    return {
        # Per provider of the listed devices: what it gives and records (the form shows a
        # device's rights only; the request is refused for any other).
        "offers": {p: offers.for_form(p) for p in sorted({d.provider for d in found})},
        "title": "New remote session",
        "devices": found,
        "groups": groups,
        "online": {x.device.id: x.seen.online for x in listed if x.seen.enrolled},
        "systems": registry_for(db).systems(),
        "capabilities": CAPABILITY_WORDS,
        "durations": DURATIONS,
        "form": defaults,
        # Nothing pre-ticked: the technician asks for exactly the rights the work needs.
        "chosen": values.get("chosen") or [],
        "duration": values.get("duration") or 30,
    }


@router.get("/ui/new", response_model=None)
async def new_form(
    request: Request,
    who: Annotated[Principal, page_user(is_technician)],
    db: DbSession,
    system: Ref = "",
    ticket: Ref = "",
) -> Response:
    # The lookup first: a refusal rolls the transaction back, which would expire the
    # devices the form lists (and the template would then load them outside the loop).
    lookup = await _lookup(db, who, system, ticket) if system and ticket else None
    context = await _form_context(db, who, system=system, ticket=ticket)
    if lookup is not None:
        context["lookup"] = lookup
    return page(request, "ui/new.html", **context)


async def _lookup(db: DbSession, who: Principal, system: str, ticket: str) -> dict[str, Any]:
    """What the ticket's system says, or why it could not say (shown next to the field);
    checked for the technician looking, as their request will be (``require_assignee``)."""
    names, groups = await gate.technician_identity(db, who)
    try:
        info = await connectors.lookup_for_session(
            db, system, ticket, technician=names, technician_groups=groups, require_open=False
        )
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return {"ok": False, "detail": exc.detail}
    return {
        "ok": True,
        "verified": info.verified,
        "subject": info.subject,
        "state": info.raw_state or info.state,
        "open": info.is_open,
        "requester": info.requester,
        "ref": info.ref,
    }


@router.get("/ui/new/ticket", response_model=None)
async def ticket_fragment(
    request: Request,
    who: Annotated[Principal, page_user(is_technician)],
    db: DbSession,
    system: Ref = "",
    ticket: Ref = "",
) -> Response:
    lookup = await _lookup(db, who, system, ticket) if system.strip() and ticket.strip() else None
    return page(request, "ui/_ticket.html", lookup=lookup)


@router.post("/ui/sessions", response_model=None)
async def create(
    request: Request, who: Annotated[Principal, page_user(is_technician)], db: DbSession
) -> Response:
    form = await request.form()
    text = {k: str(form.get(k, "")).strip() for k in FORM_FIELDS}
    chosen = [str(c) for c in form.getlist("capabilities")]
    raw_duration = str(form.get("duration_minutes", ""))
    duration = int(raw_duration) if raw_duration.isdigit() else 0
    context = await _form_context(db, who, **text, chosen=chosen, duration=duration)
    try:
        body = SessionCreate.model_validate(
            {
                "ticket": {
                    "system": text["system"],
                    "external_id": text["ticket"],
                    "subject": text["subject"] or None,
                    # What a group's second-approval policy may be narrowed by.
                    "priority": text["priority"] or None,
                    "category": text["category"] or None,
                },
                "device_id": text["device_id"],
                "reason": text["reason"],
                "capabilities": chosen,
                "duration_minutes": duration,
                "unattended": form.get("unattended") == "on",
            }
        )
        record, issued = await approval.create_session(db, who, body)
    except ValidationError as exc:
        return page(request, "ui/new.html", 422, error=_invalid(exc), **context)
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        lookup = None
        if text["system"] and text["ticket"]:  # show the ticket (and subject field) again
            lookup = await _lookup(db, who, text["system"], text["ticket"])
            lookup["subject"] = lookup.get("subject") or text["subject"]
        # Rebuilt after any rollback: the devices loaded before it are expired.
        context = await _form_context(db, who, **text, chosen=chosen, duration=duration)
        if lookup is not None:
            context["lookup"] = lookup
        return page(request, "ui/new.html", status_for(exc), error=exc.detail, **context)
    sid = record.session.id
    response = RedirectResponse(f"/ui/sessions/{sid}", status_code=303)
    if issued is not None and issued.code is not None:
        seconds = max(int((issued.expires_at - utcnow()).total_seconds()), 1)
        payload = {"sid": sid, "code": issued.code, "url": issued.url}
        response.set_cookie(
            CODE_COOKIE,
            sign(settings_of_request(request), "code", payload, seconds),
            max_age=seconds,
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
            path=f"/ui/sessions/{sid}",
        )
    return response


# --- one session --------------------------------------------------------------------------


async def _session_context(
    request: Request, db: DbSession, who: Principal, sid: str
) -> dict[str, Any]:
    record = await invites.session_for(db, who, sid)
    s = record.session
    state = SessionState(s.state)
    own = who.user_id == s.technician_id
    group = await devices.get_group(db, record.device.group_id)
    labels = {str(q.get("id")): str(q.get("label")) for q in group.questions}
    answers = [(labels.get(k, k), v) for k, v in (s.answers or {}).items()]
    consent = unsign(settings_of_request(request), "code", request.cookies.get(CODE_COOKIE))
    if consent is not None and consent.get("sid") != sid:
        consent = None
    if consent is None and own and state is SessionState.awaiting_consent:
        # Opened by a second approval: the code was made on the approver's page.
        consent = await consent_service.handoff(db, sid)
    # A share link or launch URI is a credential for the whole window: only the session's
    # own technician gets it, never an admin or expert who can also open this page.
    launch = (
        await providers.launch_for(db, s)
        if own and state in (SessionState.approved, SessionState.active)
        else None
    )
    base = settings_of_request(request).base_url
    forwards = [
        f"supportbroker connect {sid} --url {base} --forward {port}:{port}"
        for port in group.allowed_ports
    ]
    return {
        "record": record,
        "s": s,
        "state": state.value,
        "is_open": state in OPEN_STATES,
        "own": own,
        "expert": not own and await invites.is_invited(db, sid, who.user_id),
        "watch": is_admin(who) and who.has(Scope.sessions_admin),
        "experts": await invites.invited_experts(db, sid),
        "candidates": await invites.candidates(db, record) if own else [],
        "consent": consent if state is SessionState.awaiting_consent else None,
        # Someone entering wrong codes for this request: the technician should know (the
        # lookup is read aloud, so it may have been overheard).
        "guessing": (
            await consent_service.guessing(db, sid)
            if state is SessionState.awaiting_consent
            else None
        ),
        "answers": answers,
        "launch": launch,
        "agent": s.provider == "agent",
        "shell": "shell" in s.capabilities,
        "screen": bool({"view", "control"} & set(s.capabilities)),
        "forwards": forwards if s.provider == "agent" else [],
        "capability_words": CAPABILITY_WORDS,
        "recording": offers.recording_of(s.provider, s.capabilities),
        "remaining": (s.deadline_at - utcnow()) if s.deadline_at else timedelta(0),
    }


@router.get("/ui/sessions/{sid}", response_model=None)
async def session_page(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(technician_or_admin)],
    db: DbSession,
) -> Response:
    context = await _session_context(request, db, who, sid)
    return page(
        request,
        "ui/session.html",
        title=f"Session on {context['record'].ticket.external_id}",
        **context,
    )


@router.get("/ui/sessions/{sid}/status", response_model=None)
async def session_fragment(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(technician_or_admin)],
    db: DbSession,
) -> Response:
    context = await _session_context(request, db, who, sid)
    return page(request, "ui/_session_status.html", **context)


async def _act(request: Request, db: DbSession, who: Principal, sid: str, action: str) -> Response:
    if action == "start":
        await sessions.start_session(db, who, sid)
    elif action == "end":
        await sessions.end_session(db, who, sid, "ended from the console")
    else:
        await sessions.cancel_session(db, who, sid, "cancelled from the console")
    return RedirectResponse(f"/ui/sessions/{sid}", status_code=303)


@router.post("/ui/sessions/{sid}/start", response_model=None)
async def start(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(technician_or_admin)],
    db: DbSession,
) -> Response:
    return await _act(request, db, who, sid, "start")


@router.post("/ui/sessions/{sid}/end", response_model=None)
async def end(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(technician_or_admin)],
    db: DbSession,
) -> Response:
    return await _act(request, db, who, sid, "end")


@router.post("/ui/sessions/{sid}/cancel", response_model=None)
async def cancel(
    request: Request,
    sid: str,
    who: Annotated[Principal, page_user(technician_or_admin)],
    db: DbSession,
) -> Response:
    return await _act(request, db, who, sid, "cancel")
