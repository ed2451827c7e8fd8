"""Users and logins: the logic behind the auth and users routes, the CLI and the web UI.

Passwords are never logged or put into audit payloads; a generated one-time password is
returned to the caller once and must be changed at the first login. A failed login looks
the same whatever went wrong (unknown user, wrong password, disabled account), is audited,
and counts toward the lockout in :mod:`broker.auth.throttle`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth import throttle, totp
from broker.auth.models import Role, User, WebSession
from broker.auth.principal import Principal
from broker.auth.repository import UserRepository, WebSessionRepository
from broker.auth.schemas import PASSWORD_MIN_LENGTH, USERNAME_PATTERN
from broker.auth.secrets import (
    PasswordCost,
    csrf_token_for,
    hash_password_off_loop,
    needs_rehash,
    new_password,
    token_hash,
    verify_password_off_loop,
)
from broker.context import settings_of
from broker.db.base import utcnow
from broker.errors import (
    Conflict,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from broker.evidence import refusals
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, Actor, record_event

LOGIN_FAILED = "wrong username or password"
INITIAL_ADMIN = "admin"
EDITABLE = frozenset({"display_name", "email", "role", "is_active", "max_concurrent_sessions"})


@dataclass(frozen=True)
class LoginResult:
    user: User
    cookie_secret: str
    csrf_token: str


async def get_user(db: AsyncSession, user_id: str) -> User:
    user = await UserRepository(db).get(user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


async def get_user_by_name(db: AsyncSession, username: str) -> User:
    user = await UserRepository(db).by_username(username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


async def list_users(db: AsyncSession) -> list[User]:
    return await UserRepository(db).list()


async def create_user(
    db: AsyncSession,
    *,
    username: str,
    display_name: str,
    role: str,
    password: str | None,
    email: str | None = None,
    actor: Actor = SYSTEM_ACTOR,
    must_change_password: bool = False,
    max_concurrent_sessions: int | None = None,
) -> User:
    if role not in Role.__members__:
        raise ValidationFailed(f"role must be one of {', '.join(Role.__members__)}")
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise ValidationFailed(
            "username: 1-64 characters, lowercase letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    repo = UserRepository(db)
    if await repo.by_username(username) is not None:
        raise Conflict(f"username {username!r} is taken")
    user = await repo.add(
        User(
            username=username,
            display_name=display_name,
            role=role,
            email=email,
            password_hash=await _hash(db, password) if password else None,
            must_change_password=must_change_password,
            max_concurrent_sessions=max_concurrent_sessions,
        )
    )
    await record_event(
        db,
        EventType.user_created,
        ticket=None,
        actor=actor,
        data={"user_id": user.id, "username": username, "role": role},
    )
    return user


async def create_user_with_password(
    db: AsyncSession,
    *,
    actor: Actor,
    username: str,
    role: str,
    display_name: str | None = None,
    email: str | None = None,
    max_concurrent_sessions: int | None = None,
) -> tuple[User, str]:
    """A new account with a generated one-time password (returned, never stored in clear)."""
    password = new_password()
    user = await create_user(
        db,
        username=username,
        display_name=display_name or username,
        role=role,
        password=password,
        email=email,
        actor=actor,
        must_change_password=True,
        max_concurrent_sessions=max_concurrent_sessions,
    )
    return user, password


async def ensure_initial_admin(db: AsyncSession) -> tuple[str, str] | None:
    """On an empty database create ``admin`` with a one-time password; else do nothing."""
    if await UserRepository(db).count() > 0:
        return None
    _, password = await create_user_with_password(
        db, actor=SYSTEM_ACTOR, username=INITIAL_ADMIN, role="admin", display_name="Administrator"
    )
    return INITIAL_ADMIN, password


async def update_user(
    db: AsyncSession, actor: Actor, user_id: str, changes: dict[str, Any]
) -> User:
    """Apply the sent fields; refuses to leave the broker without an active admin."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValidationFailed(f"cannot change {', '.join(sorted(unknown))}")
    user = await get_user(db, user_id)
    for field in ("display_name", "role", "is_active"):
        if field in changes and changes[field] is None:
            raise ValidationFailed(f"{field} cannot be null")
    if "role" in changes and changes["role"] not in Role.__members__:
        raise ValidationFailed(f"role must be one of {', '.join(Role.__members__)}")
    demoted = user.role == "admin" and changes.get("role", "admin") != "admin"
    disabled = user.role == "admin" and user.is_active and changes.get("is_active") is False
    repo = UserRepository(db)
    if (demoted or disabled) and await repo.count_active_admins() <= 1:
        raise Conflict("this is the last active admin; make another admin first")
    changed = {k: v for k, v in changes.items() if getattr(user, k) != v}
    for field, value in changed.items():
        setattr(user, field, value)
    await db.flush()
    if changed.get("is_active") is False:
        await WebSessionRepository(db).delete_for_user(user.id)
    if changed:
        await record_event(
            db,
            EventType.user_updated,
            ticket=None,
            actor=actor,
            data={"user_id": user.id, "username": user.username, "changes": changed},
        )
    return user


async def reset_password(db: AsyncSession, actor: Actor, user: User) -> str:
    """A new one-time password for ``user``; their browser sessions end."""
    password = new_password()
    user.password_hash = await _hash(db, password)
    user.must_change_password = True
    await WebSessionRepository(db).delete_for_user(user.id)
    await throttle.clear_account(db, user.username)
    await db.flush()
    await record_event(
        db,
        EventType.user_password_reset,
        ticket=None,
        actor=actor,
        data={"user_id": user.id, "username": user.username},
    )
    return password


async def reset_password_for(db: AsyncSession, actor: Actor, user_id: str) -> tuple[User, str]:
    user = await get_user(db, user_id)
    return user, await reset_password(db, actor, user)


async def authenticate(db: AsyncSession, username: str, password: str, ip: str) -> User:
    """The active user with these credentials, or NotAuthenticated / RateLimited (audited:
    a failure one by one, a refusal during a wait tallied per source and minute)."""
    now = utcnow()
    username = username.strip()
    actor = Actor(kind="anonymous", name=username[:64], ip=ip)
    lock = await throttle.check(db, username, ip, now)
    if lock is not None:
        await refusals.tally(db, refusals.LOGIN, ip, now)
        raise RateLimited(
            f"too many failed logins; try again in {lock.in_words}",
            retry_after=lock.retry_after,
            keep_changes=True,
        )
    user = await UserRepository(db).by_username(username)
    # The hash is checked even for unknown users, so timing does not reveal them.
    valid = await _verify(db, password, user.password_hash if user else None)
    why = None
    if user is None:
        why = "unknown user"
    elif not valid:
        why = "wrong password"
    elif not user.is_active:
        why = "account disabled"
    if user is None or why is not None:
        await throttle.charge(db, username, ip, now)
        await record_event(
            db,
            EventType.auth_login_failed,
            ticket=None,
            actor=actor,
            data={"username": username[:64], "why": why},
        )
        raise NotAuthenticated(LOGIN_FAILED, keep_changes=True)
    await throttle.signed_in(db, username, ip, now)
    if user.password_hash and needs_rehash(user.password_hash, _cost(db)):
        # The configured cost changed since this password was set: store it under the new one
        # while we hold the plain password (the only moment we do).
        user.password_hash = await _hash(db, password)
    return user


def _cost(db: AsyncSession) -> PasswordCost:
    settings = settings_of(db)
    return PasswordCost(
        time_cost=settings.password_hash_time_cost,
        memory_kib=settings.password_hash_memory_kib,
        parallelism=settings.password_hash_parallelism,
    )


async def _hash(db: AsyncSession, password: str) -> str:
    return await hash_password_off_loop(password, _cost(db))


async def _verify(db: AsyncSession, password: str, password_hash: str | None) -> bool:
    return await verify_password_off_loop(password, password_hash, _cost(db))


async def throttled_usernames(db: AsyncSession) -> set[str]:
    """Usernames whose sign-in waits right now for at least one source."""
    return await throttle.waiting_accounts(db, utcnow())


async def unlock(db: AsyncSession, actor: Actor, user_id: str) -> tuple[User, int]:
    """Clear the failed-login counters of an account (an admin's action; audited)."""
    user = await get_user(db, user_id)
    return user, await throttle.unlock(db, actor, user.username)


async def start_web_session(db: AsyncSession, user: User, ip: str) -> tuple[str, str]:
    """A browser session for ``user``: returns (cookie secret, CSRF token). Audited."""
    settings = settings_of(db)
    now = utcnow()
    cookie_secret = secrets.token_urlsafe(32)
    csrf = csrf_token_for(settings.secret_key.get_secret_value(), cookie_secret)
    repo = WebSessionRepository(db)
    await repo.delete_expired(now)
    await repo.add(
        WebSession(
            user_id=user.id,
            token_hash=token_hash(cookie_secret),
            expires_at=now + timedelta(hours=settings.web_session_hours),
            ip=ip[:64],
        )
    )
    await record_event(
        db,
        EventType.auth_login,
        ticket=None,
        actor=Actor(kind="user", id=user.id, name=user.display_name, role=user.role, ip=ip),
        data={"username": user.username, "method": "password"},
    )
    return cookie_secret, csrf


async def login(
    db: AsyncSession, username: str, password: str, ip: str, totp_code: str | None = None
) -> LoginResult:
    """Password (and, where enabled, TOTP code) in one step: the API's login."""
    user = await authenticate(db, username, password, ip)
    if await totp.is_enabled(db, user.id):
        if not totp_code:
            raise NotAuthenticated("this account needs its second-factor code (totp_code)")
        await totp.verify_login_code(db, user, totp_code, ip)
    cookie_secret, csrf = await start_web_session(db, user, ip)
    return LoginResult(user=user, cookie_secret=cookie_secret, csrf_token=csrf)


async def end_web_session(db: AsyncSession, cookie_secret: str, ip: str | None = None) -> bool:
    """Log the browser with this cookie out; False if it was not logged in. Audited."""
    repo = WebSessionRepository(db)
    web = await repo.by_token_hash(token_hash(cookie_secret))
    if web is None:
        return False
    user = await UserRepository(db).get(web.user_id)
    await repo.delete_by_token_hash(web.token_hash)
    actor = Actor(
        kind="user",
        id=web.user_id,
        name=user.display_name if user else None,
        role=user.role if user else None,
        ip=ip,
    )
    await record_event(db, EventType.auth_logout, ticket=None, actor=actor, data={})
    return True


async def logout(db: AsyncSession, principal: Principal, cookie_secret: str | None) -> None:
    if principal.kind != "user" or not cookie_secret:
        raise ValidationFailed("logout ends a browser session; revoke API tokens instead")
    await end_web_session(db, cookie_secret, principal.ip)


async def change_password(
    db: AsyncSession,
    principal: Principal,
    *,
    current: str,
    new: str,
    cookie_secret: str | None,
) -> User:
    """Change one's own password; other browser sessions of the user end."""
    if principal.kind != "user" or principal.user_id is None:
        raise PermissionDenied("only a logged-in user changes their own password")
    user = await get_user(db, principal.user_id)
    if not await _verify(db, current, user.password_hash):
        await record_event(
            db,
            EventType.auth_password_change_failed,
            ticket=None,
            actor=principal.actor(),
            data={"why": "wrong current password"},
        )
        raise NotAuthenticated("the current password is wrong", keep_changes=True)
    if len(new) < PASSWORD_MIN_LENGTH:
        raise ValidationFailed(f"the new password needs at least {PASSWORD_MIN_LENGTH} characters")
    if new == current:
        raise ValidationFailed("the new password must differ from the current one")
    user.password_hash = await _hash(db, new)
    user.must_change_password = False
    keep = token_hash(cookie_secret) if cookie_secret else None
    await WebSessionRepository(db).delete_for_user(user.id, keep_token_hash=keep)
    await db.flush()
    await record_event(
        db, EventType.auth_password_changed, ticket=None, actor=principal.actor(), data={}
    )
    return user
