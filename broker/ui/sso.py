"""Single sign-on pages: ``GET /ui/login/oidc`` → the issuer → ``GET /ui/login/oidc/callback``.

The state, nonce and PKCE verifier travel in a signed, ten-minute cookie scoped to
``/ui/login``; the protocol itself is in ``broker.auth.oidc``.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from broker.auth import oidc
from broker.auth.deps import client_ip
from broker.db.session import DbSession
from broker.errors import BrokerError, NotAuthenticated
from broker.ui.common import (
    safe_next,
    secure_cookies,
    settings_of_request,
    sign,
    unsign,
)
from broker.ui.kit import refused
from broker.ui.login import (
    OIDC_COOKIE,
    OIDC_SECONDS,
    logged_in,
    login_form,
    oidc_settings,
    refused_keep,
)

router = APIRouter(include_in_schema=False)


def oidc_client(request: Request) -> oidc.OidcClient:
    transport = getattr(request.app.state, "oidc_transport", None)  # the tests' fake issuer
    return oidc.OidcClient(oidc_settings(request), transport=transport)


def _callback_url(request: Request) -> str:
    return f"{settings_of_request(request).base_url}/ui/login/oidc/callback"


@router.get("/ui/login/oidc", response_model=None)
async def oidc_start(
    request: Request, db: DbSession, next: Annotated[str, Query(max_length=2000)] = ""
) -> Response:
    if not oidc_settings(request).enabled:
        return login_form(request, 404, error="single sign-on is not configured here")
    try:
        auth_request = await oidc_client(request).authorization_request(_callback_url(request))
    except BrokerError as exc:
        return await refused(request, db, exc)
    payload = {
        "state": auth_request.state,
        "nonce": auth_request.nonce,
        "verifier": auth_request.verifier,
        "next": safe_next(next),
    }
    response = RedirectResponse(auth_request.url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        sign(settings_of_request(request), "oidc", payload, OIDC_SECONDS),
        max_age=OIDC_SECONDS,
        httponly=True,
        samesite="lax",  # the issuer sends the browser back with a top-level GET
        secure=secure_cookies(request),
        path="/ui/login",
    )
    return response


@router.get("/ui/login/oidc/callback", response_model=None)
async def oidc_callback(
    request: Request,
    db: DbSession,
    code: Annotated[str, Query(max_length=4000)] = "",
    state: Annotated[str, Query(max_length=200)] = "",
    error: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    sso = oidc_settings(request)
    if not sso.enabled:
        return login_form(request, 404, error="single sign-on is not configured here")
    pending = unsign(settings_of_request(request), "oidc", request.cookies.get(OIDC_COOKIE))
    try:
        if error:
            raise NotAuthenticated(f"{oidc.SSO_FAILED}: the identity provider said {error!r}")
        if pending is None or not secrets.compare_digest(str(pending.get("state", "")), state):
            raise NotAuthenticated(f"{oidc.SSO_FAILED}: the login expired or was not started here")
        claims = await oidc_client(request).exchange(
            code,
            redirect_uri=_callback_url(request),
            verifier=str(pending["verifier"]),
            nonce=str(pending["nonce"]),
        )
        user = await oidc.user_for_claims(db, sso, claims, client_ip(request))
    except BrokerError as exc:
        await refused_keep(db, exc)
        response = login_form(request, 401, error=exc.detail)
        response.delete_cookie(OIDC_COOKIE, path="/ui/login")
        return response
    return await logged_in(request, db, user, safe_next(str(pending.get("next") or "")))
