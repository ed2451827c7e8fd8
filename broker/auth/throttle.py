"""Password-guessing protection for logins, shared by replicas through the database.

A lockout by account alone lets anyone lock anyone out (ten wrong passwords for ``admin``
from anywhere); so the counters are, as mature sites keep them:

- per (account, source): the first ``PAIR_FREE`` wrong logins are free, then each one makes
  that pair wait ``PAIR_BACKOFF`` at first and twice as long after every further failure;
  other sources, the real user's among them, are not slowed by it;
- per source (``ip:<address>``): ``CLIENT_FREE`` wrong logins across accounts, then waits
  that grow the same way (one address spraying many accounts);
- per account, the global guard (``user:<name>``): after ``login_guard_failures`` (50) wrong
  logins from
  all sources together, sources the account has never signed in from wait (growing from
  ``GUARD_BACKOFF``), while an address it signed in from before still gets in: an attacker
  on many addresses is held to a few guesses each and that many in all per wait.

While a wait is in force the attempt is refused (429, ``Retry-After``) before the password is
checked, so a right guess then teaches nothing; refusals are tallied per source and minute
(:mod:`broker.evidence.refusals`), not audited one by one. A counter starts afresh once its
wait is over and it has been quiet for ``QUIET``. A successful login clears its own pair and
remembers the source; never the guard nor the address counter (an attacker must not reset
them by logging into an account of their own). An admin's unlock clears every counter of an
account (:func:`unlock`). Nothing here sleeps: waits are the client's, not a held lock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import LoginThrottle
from broker.auth.repository import LoginThrottleRepository
from broker.backoff import retry_after_seconds, wait_after
from broker.context import settings_of
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event

PAIR_FREE = 5
PAIR_BACKOFF = timedelta(seconds=30)
CLIENT_FREE = 20
CLIENT_BACKOFF = timedelta(minutes=1)
GUARD_BACKOFF = timedelta(minutes=15)
QUIET = timedelta(minutes=15)


def account_key(username: str) -> str:
    return f"user:{username[:64]}"


def client_key(ip: str) -> str:
    return f"ip:{ip[:64]}"


def pair_key(username: str, ip: str) -> str:
    # Hashed: an account name and an address together may not fit the key column.
    digest = hashlib.sha256(f"{username[:64]}\n{ip[:64]}".encode()).hexdigest()
    return f"pair:{digest}"


@dataclass(frozen=True)
class Lock:
    """Why a login is refused before its password is checked, and until when."""

    scope: str  # "client" | "account_source" | "account"
    until: datetime
    retry_after: int  # seconds

    @property
    def minutes(self) -> int:
        return -(-self.retry_after // 60)

    @property
    def in_words(self) -> str:
        if self.retry_after < 120:
            return f"{self.retry_after} second(s)"
        return f"{self.minutes} minute(s)"


async def check(db: AsyncSession, username: str, ip: str, now: datetime) -> Lock | None:
    """A wait in force now for this client, this (account, client) pair, or the account's
    guard (which an address the account signed in from before passes)."""
    repo = LoginThrottleRepository(db)
    keys = (
        ("client", client_key(ip)),
        ("account_source", pair_key(username, ip)),
        ("account", account_key(username)),
    )
    for scope, key in keys:
        row = await repo.find_locked(key)
        if row is None or row.locked_until is None or row.locked_until <= now:
            continue
        if scope == "account" and await repo.is_known_source(username[:64], ip[:64]):
            continue
        return Lock(
            scope=scope,
            until=row.locked_until,
            retry_after=retry_after_seconds(row.locked_until, now),
        )
    return None


async def charge(db: AsyncSession, username: str, ip: str, now: datetime) -> None:
    """Count one failed login against the pair, the client and the account's guard."""
    repo = LoginThrottleRepository(db)
    name = username[:64]
    guard = settings_of(db).login_guard_failures
    # Rows are locked in the order check() locks them (client, pair, account): two logins
    # racing for the same rows then queue instead of deadlocking.
    counters = (
        ("client", client_key(ip), None, CLIENT_FREE, CLIENT_BACKOFF),
        ("account_source", pair_key(username, ip), name, PAIR_FREE, PAIR_BACKOFF),
        ("account", account_key(username), name, guard, GUARD_BACKOFF),
    )
    for scope, key, owner, free, base in counters:
        row = await repo.locked_row(key, now)
        row.username = owner
        await _count(db, row, now, free, base, scope=scope, ip=ip, username=username)
    await db.flush()


async def signed_in(db: AsyncSession, username: str, ip: str, now: datetime) -> None:
    """A right password: clear this pair's counter and remember the source for the guard."""
    repo = LoginThrottleRepository(db)
    await repo.clear(pair_key(username, ip))
    await repo.remember_source(username[:64], ip[:64], now)


async def clear_account(db: AsyncSession, username: str) -> int:
    """Clear every counter of the account (its pairs and its guard). Returns how many."""
    return await LoginThrottleRepository(db).clear_for(username[:64])


async def waiting_accounts(db: AsyncSession, now: datetime) -> set[str]:
    """Accounts with a wait in force for some source (or their guard), for the admin."""
    return await LoginThrottleRepository(db).waiting_accounts(now)


async def unlock(db: AsyncSession, actor: Actor, username: str) -> int:
    """An admin clears the account's counters (audited). Returns how many were cleared."""
    cleared = await clear_account(db, username)
    await record_event(
        db,
        EventType.auth_unlocked,
        ticket=None,
        actor=actor,
        data={"username": username[:64], "cleared": cleared},
    )
    return cleared


async def _count(
    db: AsyncSession,
    row: LoginThrottle,
    now: datetime,
    free: int,
    base: timedelta,
    *,
    scope: str,
    ip: str,
    username: str,
) -> None:
    # window_started_at: the latest failure. A counter starts afresh once its wait is over
    # and it has been quiet since for QUIET; a source that goes on sees the wait double.
    quiet_since = max(row.window_started_at, row.locked_until or row.window_started_at)
    if now - quiet_since >= QUIET:
        row.failures = 0
        row.locked_until = None
    row.failures += 1
    row.window_started_at = now
    wait = wait_after(row.failures, free=free, base=base)
    if wait:
        row.locked_until = now + wait
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
