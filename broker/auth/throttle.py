"""Password-guessing protection for logins, shared by replicas through the database.

Two counters are kept: one per account (``user:<username>``) and one per client address
(``ip:<address>``). After ``ACCOUNT_MAX_FAILURES`` wrong logins for an account, or
``CLIENT_MAX_FAILURES`` from one address, within ``LOCKOUT`` the account (or address) is
locked for ``LOCKOUT``; while locked every attempt is refused before the password is
checked, so a right guess during the lockout teaches the attacker nothing. A successful login
clears the account's counter, never the address's (an attacker must not reset it by
logging into an account of their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import LoginThrottle
from broker.auth.repository import LoginThrottleRepository
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event

ACCOUNT_MAX_FAILURES = 10
CLIENT_MAX_FAILURES = 20
LOCKOUT = timedelta(minutes=15)


def account_key(username: str) -> str:
    return f"user:{username[:64]}"


def client_key(ip: str) -> str:
    return f"ip:{ip[:64]}"


@dataclass(frozen=True)
class Lock:
    """Why a login is refused before its password is checked."""

    scope: str  # "account" | "client"
    minutes: int


async def check(db: AsyncSession, username: str, ip: str, now: datetime) -> Lock | None:
    """A lock on the account or the client, if one is in force now."""
    repo = LoginThrottleRepository(db)
    for scope, key in (("client", client_key(ip)), ("account", account_key(username))):
        row = await repo.find_locked(key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            minutes = math.ceil((row.locked_until - now).total_seconds() / 60)
            return Lock(scope=scope, minutes=minutes)
    return None


async def charge(db: AsyncSession, username: str, ip: str, now: datetime) -> None:
    """Count one failed login against the account and the client; lock at the limit."""
    repo = LoginThrottleRepository(db)
    account = await repo.locked_row(account_key(username), now)
    await _count(db, account, now, ACCOUNT_MAX_FAILURES, scope="account", ip=ip, username=username)
    client = await repo.locked_row(client_key(ip), now)
    await _count(db, client, now, CLIENT_MAX_FAILURES, scope="client", ip=ip, username=username)
    await db.flush()


async def clear_account(db: AsyncSession, username: str) -> None:
    await LoginThrottleRepository(db).clear(account_key(username))


async def _count(
    db: AsyncSession,
    row: LoginThrottle,
    now: datetime,
    limit: int,
    *,
    scope: str,
    ip: str,
    username: str,
) -> None:
    if row.locked_until is not None or now - row.window_started_at >= LOCKOUT:
        # A finished lockout or an old window: count afresh.
        row.failures = 0
        row.window_started_at = now
        row.locked_until = None
    row.failures += 1
    if row.failures >= limit:
        row.locked_until = now + LOCKOUT
        await record_event(
            db,
            EventType.auth_lockout,
            ticket=None,
            actor=Actor(kind="anonymous", ip=ip),
            data={
                "scope": scope,
                "username": username[:64],
                "failures": row.failures,
                "locked_until": row.locked_until.isoformat(),
            },
        )
