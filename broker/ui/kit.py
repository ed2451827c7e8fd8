"""The page kit: what every HTML page of the broker renders and admits with.

One templates object (``web/templates``) with one time filter (``when``), one page-auth
dependency and one way to render a refusal, for the staff pages (``ui/``), the end user's
consent and history pages and the gateway's terminal and file pages.

- ``who: Annotated[Principal, page_user(rule)]`` admits a page's caller: an anonymous
  browser (or a caller that is no user, e.g. an API token) is sent to ``/ui/login?next=…``;
  a user who must change their password is sent to ``/ui/password`` first; a user whom
  ``rule`` does not admit gets the 403 page. The dependency raises (``broker.errors``:
  ``LoginRequired``, ``PasswordChangeRequired``, ``PageForbidden``) and marks the request as
  a page.
- A :class:`~broker.errors.BrokerError` raised while a marked request runs is rendered by
  :func:`render_refusal`, which the app's one error handler (``broker.app``) calls: an HTML
  page with the status the JSON API would give (``broker.errors.status_for``). The database
  session's dependency has rolled back by then, or kept the changes when the error says so,
  exactly as for the API.
- :func:`refused` renders the same page for an error a page catches itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.deps import OptionalPrincipal
from broker.auth.principal import Principal
from broker.errors import (
    BrokerError,
    LoginRequired,
    PageForbidden,
    PasswordChangeRequired,
    status_for,
)
from web import TEMPLATES_DIR

LOGIN_PATH = "/ui/login"
PASSWORD_PATH = "/ui/password"  # noqa: S105 - a page path, not a password
STAFF_REFUSAL = "ui/refused.html"
AUDIT_REFUSAL = "auditor/refused.html"  # the audit views' look, with the way back to the search
# The context key that asks ``when`` for seconds by default (the audit views set it).
SECONDS = "times_with_seconds"

templates = Jinja2Templates(directory=TEMPLATES_DIR)
Rule = Callable[[Principal], bool]


def when(moment: datetime | None, seconds: bool = False) -> Markup:
    """A moment as ``<time>``: UTC in the markup and on hover, rewritten by
    ``/static/times.js`` into the reader's own time zone (the browser's). Without the script
    the UTC text stays, labelled as such; an ISO string is never shown as text."""
    if moment is None:
        return Markup("")
    utc = moment.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{}" title="{}" data-seconds="{}">{}</time>').format(
        stamp, shown, "1" if seconds else "", shown
    )


@pass_context
def _when_filter(context: Context, moment: datetime | None, seconds: bool | None = None) -> Markup:
    """The one time filter: minutes, or seconds where the page asks (the audit views)."""
    return when(moment, bool(context.get(SECONDS)) if seconds is None else seconds)


templates.env.filters["when"] = _when_filter


def page(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    """A template rendered with the caller and the CSRF token their forms carry."""
    principal: Principal | None = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("csrf_token", principal.csrf_token if principal else None)
    return templates.TemplateResponse(request, name, context, status_code=status)


def page_user(rule: Rule, refusal: str = STAFF_REFUSAL) -> Any:
    """The dependency that admits a page's caller by ``rule`` (see the module docstring);
    ``refusal`` is the template its refusals are rendered with."""

    async def admitted(request: Request, principal: OptionalPrincipal) -> Principal:
        request.state.refusal_page = refusal
        if principal is None or principal.kind != "user":
            raise LoginRequired("log in to open this page")
        if principal.must_change_password:
            raise PasswordChangeRequired("change your password first")
        if not rule(principal):
            raise PageForbidden(f"Your role ({principal.role}) may not open this page.")
        return principal

    return Depends(admitted)


def is_page(request: Request) -> bool:
    """True when the request was admitted by :func:`page_user` (its refusals are HTML)."""
    return getattr(request.state, "refusal_page", None) is not None


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)


TITLES = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Check the form"}


def render_refusal(request: Request, exc: BrokerError) -> Response:
    """A refusal of a page as HTML, with the status the API gives the same error."""
    if isinstance(exc, LoginRequired):
        return login_redirect(request)
    if isinstance(exc, PasswordChangeRequired):
        return RedirectResponse(PASSWORD_PATH, status_code=303)
    status = status_for(exc)
    name = getattr(request.state, "refusal_page", None) or STAFF_REFUSAL
    return page(request, name, status, title=TITLES.get(status, "Refused"), detail=exc.detail)


async def refused(request: Request, db: AsyncSession, exc: BrokerError) -> Response:
    """The refusal page for an error a page caught itself, keeping the audit record when the
    error says so (as the database session's dependency does for an error it sees)."""
    if not exc.keep_changes:
        await db.rollback()
    return render_refusal(request, exc)
