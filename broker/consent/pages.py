"""The end user's consent pages (server-rendered; the path token is the credential).

- ``GET /consent``: enter the code; ``POST /consent``: exchange it, redirect to the request
- ``GET /consent/{token}``: who, which ticket, why, what rights, how long, recorded;
  approve/deny; once approved a prominent "End this session now" and who is connected
  (the technician, an invited expert, a watching supervisor), live, with who left
- ``POST /consent/{token}/decide``, ``/revoke``, ``/rate``: the forms; each redirects back
- every request page links to the history of its device (broker.history.pages)

The forms need no CSRF token: the path token is the credential and another site cannot know
it. The code form has no such secret, so every form post is refused (403) when the browser
says it comes from another origin. A refused action is shown on the page. Unless the refusal
must be remembered (wrong codes, ``keep_changes``) the transaction is rolled back first,
exactly as the JSON API would.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.deps import client_ip
from broker.consent.schemas import ConsentOut, DecisionIn, LookupIn, RatingIn, RevokeIn
from broker.consent.service import ConsentView, history_link
from broker.db.session import DbSession
from broker.errors import BrokerError, PermissionDenied, RateLimited, status_for
from broker.flows import approval
from broker.gateway.attendance import Attendee
from broker.providers.offers import END_USER_WORDS
from broker.ui.common import cross_origin
from broker.ui.kit import templates

router = APIRouter(tags=["consent pages"], include_in_schema=False)
# One wording of the rights for every page, on the page kit's one templates object.
templates.env.globals["capability_words"] = END_USER_WORDS
ANSWER_PREFIX = "answer_"


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


async def _refused(db: AsyncSession, exc: BrokerError) -> tuple[int, str]:
    if not exc.keep_changes:
        await db.rollback()
    return status_for(exc), exc.detail


def _connected(request: Request, session_id: str) -> list[Attendee] | None:
    """Who is (and was) on the session's terminal or screen, from this process's gateway;
    None when this process runs no gateway (the page then says nothing about it)."""
    gateway = getattr(request.app.state, "gateway", None)
    return None if gateway is None else gateway.attendance.of(session_id)


def _same_origin(request: Request) -> None:
    if cross_origin(request):
        raise PermissionDenied("this form was sent from another site")


def _invalid(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()[:5]
    )


@router.get("/consent", response_class=HTMLResponse)
async def enter_code(request: Request) -> HTMLResponse:
    return _page(request, "consent/enter_code.html")


@router.post("/consent", response_model=None)
async def submit_code(
    request: Request, db: DbSession, code: Annotated[str, Form(max_length=40)] = ""
) -> Response:
    _same_origin(request)
    try:
        token = await approval.lookup_code(db, LookupIn(code=code).code, ip=client_ip(request))
    except ValidationError as exc:
        return _page(request, "consent/enter_code.html", 422, error=_invalid(exc))
    except BrokerError as exc:
        status, detail = await _refused(db, exc)
        page = _page(request, "consent/enter_code.html", status, error=detail)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            page.headers["Retry-After"] = str(exc.retry_after)
        return page
    return RedirectResponse(f"/consent/{token}", status_code=303)


def _request_page(
    request: Request,
    db: AsyncSession,
    view: ConsentView,
    token: str,
    status: int = 200,
    **more: Any,
) -> HTMLResponse:
    consent = ConsentOut.of(view)
    return _page(
        request,
        "consent/request.html",
        status,
        consent=consent,
        token=token,
        history_url=history_link(db, view.request),
        connected=_connected(request, consent.session_id),
        **more,
    )


@router.get("/consent/{token}", response_class=HTMLResponse)
async def show(request: Request, token: str, db: DbSession) -> HTMLResponse:
    try:
        view = await approval.view(db, token)
    except BrokerError as exc:
        status, detail = await _refused(db, exc)
        return _page(request, "consent/error.html", status, error=detail)
    return _request_page(request, db, view, token)


async def _redisplay(
    request: Request, db: DbSession, token: str, error: str, status: int
) -> HTMLResponse:
    try:
        view = await approval.view(db, token)
    except BrokerError as exc:
        status, detail = await _refused(db, exc)
        return _page(request, "consent/error.html", status, error=detail)
    return _request_page(request, db, view, token, status, error=error)


@router.post("/consent/{token}/decide", response_model=None)
async def decide(request: Request, token: str, db: DbSession) -> Response:
    _same_origin(request)
    form = await request.form()
    answers = {
        str(k)[len(ANSWER_PREFIX) :]: str(v)
        for k, v in form.multi_items()
        if str(k).startswith(ANSWER_PREFIX) and str(v).strip()
    }
    try:
        # The form lists each requested right as a ticked box: what is sent is granted
        # (``rights_shown`` says the boxes were there, so none ticked means none granted).
        granted = [str(v) for v in form.getlist("capability")] if form.get("rights_shown") else None
        body = DecisionIn.model_validate(
            {
                "decision": str(form.get("decision", "")),
                "name": str(form.get("name", "")),
                "answers": answers,
                "capabilities": granted,
            }
        )
        await approval.decide(
            db,
            token,
            approve=body.decision == "approve",
            name=body.name,
            answers=body.answers,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
            granted=None if body.capabilities is None else [c.value for c in body.capabilities],
        )
    except ValidationError as exc:
        return await _redisplay(request, db, token, _invalid(exc), 422)
    except BrokerError as exc:
        status, detail = await _refused(db, exc)
        return await _redisplay(request, db, token, detail, status)
    return RedirectResponse(f"/consent/{token}", status_code=303)


@router.post("/consent/{token}/revoke", response_model=None)
async def revoke(
    request: Request, token: str, db: DbSession, name: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    _same_origin(request)
    try:
        body = RevokeIn(name=name or None)
        await approval.revoke(db, token, name=body.name, ip=client_ip(request))
    except ValidationError as exc:
        return await _redisplay(request, db, token, _invalid(exc), 422)
    except BrokerError as exc:
        status, detail = await _refused(db, exc)
        return await _redisplay(request, db, token, detail, status)
    return RedirectResponse(f"/consent/{token}", status_code=303)


@router.post("/consent/{token}/rate", response_model=None)
async def rate(
    request: Request,
    token: str,
    db: DbSession,
    score: Annotated[str, Form(max_length=2)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    _same_origin(request)
    try:
        body = RatingIn(score=int(score) if score.isdigit() else 0, comment=comment or None)
        await approval.rate(
            db, token, score=body.score, comment=body.comment, ip=client_ip(request)
        )
    except ValidationError as exc:
        return await _redisplay(request, db, token, _invalid(exc), 422)
    except BrokerError as exc:
        status, detail = await _refused(db, exc)
        return await _redisplay(request, db, token, detail, status)
    return RedirectResponse(f"/consent/{token}", status_code=303)
