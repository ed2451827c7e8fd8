"""Authentication and authorization dependencies for routers.

A request authenticates with a bearer token (API clients, ticket systems) or the session
cookie (the web UI). Cookie-authenticated requests that change state must carry the CSRF
token (header ``X-CSRF-Token`` or form field ``csrf_token``). Routers declare what they need
with ``Depends(require(Scope.x))``; finer rules (own sessions, own groups) live in services.

A browser logged in with a one-time password (``must_change_password``) is refused by
``current_principal`` and ``require`` until the password is changed; only the routes that
take ``SignedIn`` (``/auth/me``, ``/auth/password``, ``/auth/logout``) admit it. A missing
scope and a wrong CSRF token are refused with 403 and audited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.contextvars import bind_contextvars

from broker.auth.models import ApiToken, User
from broker.auth.permissions import Scope, grants_for
from broker.auth.principal import Principal
from broker.auth.repository import ApiTokenRepository, UserRepository, WebSessionRepository
from broker.auth.secrets import constant_equal, csrf_token_for, token_hash
from broker.config import Settings
from broker.db.base import utcnow
from broker.db.session import DbSession
from broker.errors import NotAuthenticated, PermissionDenied
from broker.evidence.events import EventType
from broker.evidence.service import Actor, on_sealed, record_event

SESSION_COOKIE = "sb_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LAST_USED_PRECISION = timedelta(minutes=1)  # how stale a token's last_used_at may be


def client_ip(request: Request) -> str:
    """The caller's address; X-Forwarded-For is believed only from a trusted proxy.

    Read from the right: each trusted proxy appends the address it was called from, so the
    last address not itself a trusted proxy is the client. The leftmost entry is whatever
    the client chose to send, and throttles keyed on it could be dodged at will."""
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded or peer not in settings.trusted_proxies:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in settings.trusted_proxies:
            return hop[:64]
    return (hops[0] if hops else peer)[:64]


def token_principal(token: ApiToken, owner: User | None, ip: str | None) -> Principal:
    """Who an accepted API token acts as: its owner's role (a ticket system's token with no
    owner: ``integration``), its scopes narrowed to what that role may be granted."""
    role = owner.role if owner is not None else "integration"
    scopes = frozenset(Scope(s) for s in token.scopes if s in Scope.__members__.values())
    return Principal(
        kind="token",
        role=role,
        name=owner.display_name if owner is not None else token.name,
        scopes=scopes & grants_for(role),
        user_id=owner.id if owner is not None else None,
        token_id=token.id,
        ticket_system=token.system,
        ip=ip,
    )


async def _from_bearer(request: Request, db: DbSession, secret: str) -> Principal:
    ip = client_ip(request)
    found = await ApiTokenRepository(db).with_owner(token_hash(secret))
    token, owner = found if found is not None else (None, None)
    now = utcnow()
    problem = None
    if token is None:
        problem = "unknown token"
    elif token.revoked_at is not None:
        problem = "token revoked"
    elif token.expires_at is not None and token.expires_at <= now:
        problem = "token expired"
    elif token.owner_id is not None and (owner is None or not owner.is_active):
        problem = "token owner disabled"
    if token is None or problem is not None:
        await record_event(
            db,
            EventType.auth_token_rejected,
            ticket=None,
            actor=Actor(kind="anonymous", ip=ip),
            data={"why": problem, "token_id": token.id if token else None},
        )
        raise NotAuthenticated(f"bearer token refused: {problem}", keep_changes=True)
    principal = token_principal(token, owner, ip)
    # Written with the request's audit events at commit, not now: an early write would make
    # the whole request SQLite's writer (broker.db.sqlite) from its authentication on.
    # Kept to the minute: rewriting the token's row on every request made each one a write
    # to the same row (requests sharing a token queued on it) for a figure shown in minutes.
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        on_sealed(db, lambda _: setattr(token, "last_used_at", now))
    await record_event(
        db,
        EventType.auth_token_used,
        ticket=None,
        actor=principal.actor(),
        data={"method": request.method, "path": request.url.path},
    )
    return principal


async def _from_cookie(request: Request, db: DbSession, secret: str) -> Principal | None:
    web = await WebSessionRepository(db).by_token_hash(token_hash(secret))
    if web is None or web.expires_at <= utcnow():
        return None
    user = await UserRepository(db).get(web.user_id)
    if user is None or not user.is_active:
        return None
    settings: Settings = request.app.state.settings
    csrf = csrf_token_for(settings.secret_key.get_secret_value(), secret)
    principal = Principal(
        kind="user",
        role=user.role,
        name=user.display_name,
        scopes=grants_for(user.role),
        user_id=user.id,
        ip=client_ip(request),
        csrf_token=csrf,
        must_change_password=user.must_change_password,
    )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER) or await _form_csrf(request)
        if not sent or not constant_equal(sent, csrf):
            await record_event(
                db,
                EventType.auth_csrf_rejected,
                ticket=None,
                actor=principal.actor(),
                data={"method": request.method, "path": request.url.path, "sent": bool(sent)},
            )
            raise PermissionDenied("missing or wrong CSRF token", keep_changes=True)
    return principal


async def _form_csrf(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf_token")
        return value if isinstance(value, str) else None
    return None


async def optional_principal(request: Request, db: DbSession) -> Principal | None:
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal: Principal | None = None
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotAuthenticated("Authorization header must be 'Bearer <token>'")
        principal = await _from_bearer(request, db, secret.strip())
    elif cookie := request.cookies.get(SESSION_COOKIE):
        principal = await _from_cookie(request, db, cookie)
    if principal is not None:
        request.state.principal = principal
        bind_contextvars(user=principal.name, role=principal.role)
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def signed_in_principal(principal: OptionalPrincipal) -> Principal:
    """Any authenticated caller, even one who still has to change a one-time password."""
    if principal is None:
        raise NotAuthenticated("log in or send a bearer token")
    return principal


SignedIn = Annotated[Principal, Depends(signed_in_principal)]


async def current_principal(principal: SignedIn) -> Principal:
    if principal.must_change_password:
        raise PermissionDenied("change your one-time password first (POST /api/v1/auth/password)")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(*scopes: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a principal holding every one of ``scopes`` (refusal audited)."""

    async def _check(principal: CurrentPrincipal, request: Request, db: DbSession) -> Principal:
        missing = [s.value for s in scopes if not principal.has(s)]
        if missing:
            await record_event(
                db,
                EventType.auth_permission_denied,
                ticket=None,
                actor=principal.actor(),
                data={"method": request.method, "path": request.url.path, "missing": missing},
            )
            raise PermissionDenied(f"this needs the {', '.join(missing)} scope", keep_changes=True)
        return principal

    return _check


async def principal_by_id(
    db: AsyncSession, kind: str, principal_id: str, ip: str | None
) -> Principal:
    """The principal another replica redeemed a ticket of, read again here from the database
    (broker.replicas.peering): a token revoked, expired or whose owner was disabled since, or
    a disabled user, is refused as a request of theirs would be."""
    if kind == "token":
        token = await ApiTokenRepository(db).get(principal_id)
        owner = await UserRepository(db).get(token.owner_id) if token and token.owner_id else None
        if token is None or token.revoked_at is not None:
            raise NotAuthenticated("the ticket's token is unknown or revoked")
        if token.expires_at is not None and token.expires_at <= utcnow():
            raise NotAuthenticated("the ticket's token has expired")
        if token.owner_id is not None and (owner is None or not owner.is_active):
            raise NotAuthenticated("the ticket's token owner is disabled")
        return token_principal(token, owner, ip)
    user = await UserRepository(db).get(principal_id) if kind == "user" else None
    if user is None or not user.is_active:
        raise NotAuthenticated("the ticket's user is unknown or disabled")
    return Principal(
        kind="user",
        role=user.role,
        name=user.display_name,
        scopes=grants_for(user.role),
        user_id=user.id,
        ip=ip,
        must_change_password=user.must_change_password,
    )
