"""SQL for users, web sessions, API tokens and the login throttle."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError

from broker.auth.models import ApiToken, LoginKnownSource, LoginThrottle, User, WebSession
from broker.db.repository import Repository


class UserRepository(Repository[User]):
    model = User

    async def by_username(self, username: str) -> User | None:
        return await self.db.scalar(select(User).where(User.username == username))

    async def count(self) -> int:
        return int(await self.db.scalar(select(func.count()).select_from(User)) or 0)

    async def count_active_admins(self) -> int:
        stmt = select(func.count()).select_from(User).where(User.role == "admin", User.is_active)
        return int(await self.db.scalar(stmt) or 0)

    async def list(self) -> list[User]:
        return await self.scalars(select(User).order_by(User.username))


class WebSessionRepository(Repository[WebSession]):
    model = WebSession

    async def by_token_hash(self, token_hash: str) -> WebSession | None:
        return await self.db.scalar(select(WebSession).where(WebSession.token_hash == token_hash))

    async def delete_by_token_hash(self, token_hash: str) -> int:
        result = await self.db.execute(
            delete(WebSession).where(WebSession.token_hash == token_hash)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_for_user(self, user_id: str, *, keep_token_hash: str | None = None) -> int:
        """End a user's browser sessions (all, or all but the one with ``keep_token_hash``)."""
        stmt = delete(WebSession).where(WebSession.user_id == user_id)
        if keep_token_hash is not None:
            stmt = stmt.where(WebSession.token_hash != keep_token_hash)
        result = await self.db.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_expired(self, now: datetime) -> None:
        await self.db.execute(delete(WebSession).where(WebSession.expires_at <= now))


class ApiTokenRepository(Repository[ApiToken]):
    model = ApiToken

    async def by_token_hash(self, token_hash: str) -> ApiToken | None:
        return await self.db.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))

    async def with_owner(self, token_hash: str) -> tuple[ApiToken, User | None] | None:
        """The token and its owner (None for an integration's) in one statement: every
        bearer request asks for both."""
        stmt = (
            select(ApiToken, User)
            .outerjoin(User, User.id == ApiToken.owner_id)
            .where(ApiToken.token_hash == token_hash)
        )
        row = (await self.db.execute(stmt)).first()
        return None if row is None else (row[0], row[1])

    async def list(self) -> list[ApiToken]:
        return await self.scalars(select(ApiToken).order_by(ApiToken.created_at))


class LoginThrottleRepository(Repository[LoginThrottle]):
    model = LoginThrottle

    async def locked_row(self, key: str, now: datetime) -> LoginThrottle:
        """The counter row for ``key``, locked for this transaction (created on first use)."""
        stmt = (
            select(LoginThrottle)
            .where(LoginThrottle.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = await self.db.scalar(stmt)
        if row is not None:
            return row
        try:
            # A savepoint: two first failures for one key race on the primary key.
            async with self.db.begin_nested():
                row = LoginThrottle(key=key, failures=0, window_started_at=now)
                self.db.add(row)
        except IntegrityError:
            row = await self.db.scalar(stmt)
            if row is None:  # pragma: no cover - the racing insert must have committed
                raise
        return row

    async def find_locked(self, key: str) -> LoginThrottle | None:
        """The row for ``key`` if there is one, locked for this transaction."""
        stmt = (
            select(LoginThrottle)
            .where(LoginThrottle.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return await self.db.scalar(stmt)

    async def clear(self, key: str) -> None:
        await self.db.execute(delete(LoginThrottle).where(LoginThrottle.key == key))

    async def waiting_accounts(self, now: datetime) -> set[str]:
        stmt = select(LoginThrottle.username).where(
            LoginThrottle.username.is_not(None), LoginThrottle.locked_until > now
        )
        return {name for name in await self.db.scalars(stmt) if name is not None}

    async def clear_for(self, username: str) -> int:
        stmt = delete(LoginThrottle).where(LoginThrottle.username == username)
        result = cast(CursorResult[Any], await self.db.execute(stmt))
        return result.rowcount

    async def is_known_source(self, username: str, source: str) -> bool:
        stmt = select(LoginKnownSource.username).where(
            LoginKnownSource.username == username, LoginKnownSource.source == source
        )
        return await self.db.scalar(stmt) is not None

    async def remember_source(self, username: str, source: str, now: datetime) -> None:
        row = await self.db.get(LoginKnownSource, (username, source))
        if row is not None:
            row.last_login_at = now
            return
        # A savepoint: two first logins from one address race on the primary key, and the
        # one that loses finds the same fact already remembered.
        with contextlib.suppress(IntegrityError):
            async with self.db.begin_nested():
                self.db.add(LoginKnownSource(username=username, source=source, last_login_at=now))
