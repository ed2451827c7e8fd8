"""The auditor's pages (include at the root, no prefix).

- ``GET /ui/audit/sessions``: search by ticket, technician, device, provider, state, dates
- ``GET /ui/audit/sessions/{id}``: one session and its recordings
- ``GET|POST /ui/audit/sessions/{id}/replay``: a reason first, then the player (audited)
- ``POST /ui/audit/sessions/{id}/files/{transfer_id}``: a file the group kept, with a reason
  (audited); the session page lists them
- ``GET /ui/audit/tickets/{system}/{external_id}``: the timeline with per-record integrity,
  inclusion proofs and the last whole-log verification
- ``POST /ui/audit/tickets/{system}/{external_id}/verify``: verify the whole log now, in the
  background (audited); back to the timeline
- ``POST /ui/audit/tickets/{system}/{external_id}/bundle``: the evidence bundle (audited)
- ``GET|POST /ui/audit/tickets/{system}/{external_id}/erase``: admins crypto-shred content
- ``GET /ui/audit/security``: the log's own (``_system``) events: security events by default,
  or every event, or one type; a date range; paged, newest first
- ``GET /ui/audit/checkpoint``, ``POST /ui/audit/checkpoint/verify``: signed head, key, verify

Thin: admit the caller (``auditor_web.admit``), call one service function, render. Every POST
is a form carrying ``csrf_token``; the cookie authentication refuses it without.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import ValidationError

from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.base import utcnow
from broker.db.session import DbSession
from broker.errors import BrokerError, PermissionDenied, ValidationFailed
from broker.evidence import queries
from broker.evidence.events import EventType, event_words
from broker.evidence.schemas import EraseIn, ExportIn
from broker.flows import erasure
from broker.gateway import kept, playback, replay
from broker.types import TicketId, TicketSystem
from broker.ui import auditor_service as svc
from broker.ui.auditor_web import (
    audit_user,
    can_audit,
    can_erase,
    can_oversee,
    page,
    script,
)
from broker.ui.kit import refused

router = APIRouter(include_in_schema=False)
BASE = "/ui/audit"
Text = Annotated[str, Query(max_length=200)]
FormText = Annotated[str, Form(max_length=2000)]
System = Annotated[TicketSystem, Path()]
External = Annotated[TicketId, Path()]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'form'}: {err['msg']}"


@router.get(BASE, response_model=None)
async def audit_home() -> Response:
    return RedirectResponse("/ui/audit/sessions", status_code=303)


@router.get(BASE + "/sessions", response_model=None)
async def search_sessions(
    request: Request,
    who: Annotated[Principal, audit_user(can_oversee)],
    db: DbSession,
    ticket: Text = "",
    technician: Text = "",
    device: Text = "",
    provider: Text = "",
    state: Text = "",
    since: Text = "",
    until: Text = "",
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    event: Text = "",
) -> Response:
    form = svc.SearchForm(ticket, technician, device, provider, state, since, until, page_no, event)
    member = (who.user_id or "") if who.role == "supervisor" else None
    choices = await svc.choices(db, member, events=who.has(Scope.audit_read))
    context = {"form": form, "choices": choices, "can_audit": can_audit(who)}
    try:
        result = await svc.search(db, who, form)
    except ValidationFailed as exc:
        return page(request, "auditor/sessions.html", 422, error=exc.detail, **context)
    except PermissionDenied as exc:  # a supervisor's hand-made event filter
        return page(request, "auditor/sessions.html", 403, error=exc.detail, **context)
    return page(request, "auditor/sessions.html", result=result, **context)


SECURITY_PAGE = 50


def _actor(payload: Any) -> str:
    who = (payload or {}).get("actor")
    if not isinstance(who, dict):
        return ""
    name, role, ip = who.get("name") or who.get("kind") or "", who.get("role"), who.get("ip")
    return f"{name}{f' ({role})' if role else ''}{f' from {ip}' if ip else ''}"


@router.get(BASE + "/security", response_model=None)
async def security_events(
    request: Request,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
    event_type: Text = "security",
    since: Text = "",
    until: Text = "",
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    form = {"event_type": event_type, "since": since, "until": until}

    def query(n: int) -> str:
        return urlencode({**{k: v for k, v in form.items() if v}, "page": n})

    context: dict[str, Any] = {
        "form": form,
        "kinds": [(t.value, event_words(t.value)) for t in sorted(EventType, key=str)],
        "actor": _actor,
        "query": query,
        "page_no": page_no,
        "events": None,
    }
    try:
        types, start, end = queries.system_filter(event_type, since, until)
        found, more = await queries.system_events(
            db,
            who,
            event_types=types,
            since=start,
            until=end,
            limit=SECURITY_PAGE,
            offset=(page_no - 1) * SECURITY_PAGE,
        )
    except ValidationFailed as exc:
        return page(request, "auditor/security.html", 422, error=exc.detail, **context)
    context.update(events=found, has_next=more)
    return page(request, "auditor/security.html", **context)


@router.get(BASE + "/sessions/{session_id}", response_model=None)
async def session_detail(
    request: Request,
    session_id: str,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
) -> Response:
    detail = await svc.session_detail(db, who, session_id)
    files = await kept.kept_files(db, who, session_id)
    return page(request, "auditor/session.html", detail=detail, kept_files=files)


@router.post(BASE + "/sessions/{session_id}/files/{transfer_id}", response_model=None)
async def kept_file_download(
    request: Request,
    session_id: Annotated[str, Path(max_length=36)],
    transfer_id: Annotated[str, Path(max_length=64)],
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
    reason: FormText = "",
) -> Response:
    """A file the group kept, with the auditor's reason (``file.viewed`` is committed before
    the file leaves: ``gateway.kept.kept_file``)."""
    name, body = await kept.kept_file(db, who, session_id, transfer_id, reason=reason)
    filename = name.replace('"', "").replace("\r", "").replace("\n", "") or "file"
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(BASE + "/sessions/{session_id}/replay", response_model=None)
async def replay_form(
    request: Request,
    session_id: str,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
) -> Response:
    detail = await svc.session_detail(db, who, session_id)
    return page(request, "auditor/replay_reason.html", detail=detail, reason="")


@router.post(BASE + "/sessions/{session_id}/replay", response_model=None)
async def replay_play(
    request: Request,
    session_id: str,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
    reason: FormText = "",
    recording_id: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    try:
        cast = await replay.replay(
            db, who, session_id, reason=reason, recording_id=recording_id or None
        )
    except ValidationFailed as exc:  # refused before anything was read or recorded
        try:
            detail = await svc.session_detail(db, who, session_id)
        except BrokerError as inner:
            return await refused(request, db, inner)
        return page(
            request,
            "auditor/replay_reason.html",
            422,
            detail=detail,
            reason=reason,
            error=exc.detail,
        )
    except BrokerError as exc:
        return await refused(request, db, exc)
    template = "auditor/desktop_replay.html" if cast.format == "rfb" else "auditor/replay.html"
    return page(request, template, session_id=session_id, cast=cast)


@router.get(BASE + "/playback", response_model=None)
async def playback_page(
    request: Request, who: Annotated[Principal, audit_user(can_audit)], db: DbSession
) -> Response:
    """Dual control: the requests waiting for a second auditor, and the caller's own."""
    views = await playback.listing(db, who)
    now = utcnow()
    items = [(v, v.as_dict(now)) for v in views]
    return page(request, "auditor/playback.html", items=items, me=who.user_id)


@router.post(BASE + "/playback", response_model=None)
async def playback_ask(
    request: Request,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
    reason: FormText = "",
    session_id: Annotated[str, Form(max_length=36)] = "",
    ticket: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Ask a second auditor for a replay (``session_id``) or a plaintext export (``ticket``)."""
    await playback.ask(db, who, reason=reason, session_id=session_id or None, ticket=ticket or None)
    return RedirectResponse(BASE + "/playback", status_code=303)


@router.post(BASE + "/playback/{request_id}", response_model=None)
async def playback_decide(
    request: Request,
    request_id: Annotated[str, Path(max_length=36)],
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
    decision: Annotated[str, Form(pattern="^(approve|deny)$")] = "approve",
    reason: FormText = "",
) -> Response:
    await playback.decide(db, who, request_id, approve=decision == "approve", reason=reason)
    return RedirectResponse(BASE + "/playback", status_code=303)


@router.get(BASE + "/tickets/{system}/{external_id}", response_model=None)
async def ticket_timeline(
    request: Request,
    system: System,
    external_id: External,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
) -> Response:
    view = await svc.ticket_timeline(db, who, system, external_id)
    return page(request, "auditor/timeline.html", view=view)


@router.post(BASE + "/tickets/{system}/{external_id}/bundle", response_model=None)
async def export_bundle(
    request: Request,
    system: System,
    external_id: External,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
    reason: FormText = "",
    include_plaintext: Annotated[bool, Form()] = False,
) -> Response:
    try:
        body = ExportIn(reason=reason, include_plaintext=include_plaintext)
        await playback.require_export(
            db, who, f"{system}:{external_id}", include_plaintext=body.include_plaintext
        )
        data = await queries.export(
            db,
            who,
            f"{system}:{external_id}",
            include_plaintext=body.include_plaintext,
            reason=body.reason,
        )
    except ValidationError as exc:
        return await refused(request, db, ValidationFailed(_first_error(exc)))
    except BrokerError as exc:
        return await refused(request, db, exc)
    filename = f"evidence-{system}-{external_id}.zip".replace('"', "")
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post(BASE + "/tickets/{system}/{external_id}/dual-control", response_model=None)
async def ticket_dual_control(
    request: Request,
    system: System,
    external_id: External,
    who: Annotated[Principal, audit_user(lambda p: can_audit(p) or can_erase(p))],
    db: DbSession,
    reason: FormText = "",
    dual_control: Annotated[str, Form(pattern="^(on|off)$")] = "on",
) -> Response:
    """The ticket's own dual control: an auditor switches it on (timeline page), an admin
    switches it off (erase page); the service says who may do what."""
    ref = f"{system}:{external_id}"
    await playback.set_ticket_policy(db, who, ref, on=dual_control == "on", reason=reason)
    back = "" if can_audit(who) else "/erase"
    return RedirectResponse(
        f"{BASE}/tickets/{quote(system, safe='')}/{quote(external_id, safe='')}{back}",
        status_code=303,
    )


@router.get(BASE + "/tickets/{system}/{external_id}/erase", response_model=None)
async def erase_form(
    request: Request,
    system: System,
    external_id: External,
    who: Annotated[Principal, audit_user(can_erase)],
) -> Response:
    return page(request, "auditor/erase.html", system=system, external_id=external_id)


@router.post(BASE + "/tickets/{system}/{external_id}/erase", response_model=None)
async def erase(
    request: Request,
    system: System,
    external_id: External,
    who: Annotated[Principal, audit_user(can_erase)],
    db: DbSession,
    reason: FormText = "",
    confirm: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    ref = f"{system}:{external_id}"
    context = {"system": system, "external_id": external_id, "reason": reason}
    try:
        if confirm.strip() != ref:
            raise ValidationFailed(f"confirm: type {ref} to confirm the erasure")
        body = EraseIn(reason=reason)
        position = await erasure.erase_ticket(db, who, ref, reason=body.reason)
    except ValidationError as exc:
        return page(request, "auditor/erase.html", 422, error=_first_error(exc), **context)
    except ValidationFailed as exc:
        return page(request, "auditor/erase.html", 422, error=exc.detail, **context)
    except BrokerError as exc:
        return await refused(request, db, exc)
    return page(request, "auditor/erase.html", erased_at=position, **context)


@router.post(BASE + "/tickets/{system}/{external_id}/verify", response_model=None)
async def verify_log_now(
    request: Request,
    who: Annotated[Principal, audit_user(can_audit)],
    db: DbSession,
    system: System,
    external_id: External,
) -> Response:
    """The timeline's button: a whole-log verification starts in the background; the page
    shows it running, then its verdict (never verified per view: at 1 M records it takes
    seconds)."""
    runs = request.app.state.verifications
    await svc.ask_verification(db, who, runs, f"{system}:{external_id}")
    target = f"{BASE}/tickets/{quote(system, safe='')}/{quote(external_id, safe='')}#integrity"
    return RedirectResponse(target, status_code=303)


@router.get(BASE + "/checkpoint", response_model=None)
async def checkpoint(
    request: Request, who: Annotated[Principal, audit_user(can_audit)], db: DbSession
) -> Response:
    view = await svc.checkpoint_view(db)
    background = getattr(request.app.state, "audit_status", None)
    return page(request, "auditor/checkpoint.html", view=view, background=background)


@router.post(BASE + "/checkpoint/verify", response_model=None)
async def verify_now(
    request: Request, who: Annotated[Principal, audit_user(can_audit)], db: DbSession
) -> Response:
    report = await svc.verify_now(db)
    view = await svc.checkpoint_view(db)
    background = getattr(request.app.state, "audit_status", None)
    return page(request, "auditor/checkpoint.html", view=view, background=background, report=report)


@router.get("/static/auditor.js")
async def auditor_js() -> FileResponse:
    return script("auditor.js")


@router.get("/static/suggest.js")
async def suggest_js() -> FileResponse:
    return script("suggest.js")


@router.get("/static/desktop_replay.js")
async def desktop_replay_js() -> FileResponse:
    return script("desktop_replay.js")
