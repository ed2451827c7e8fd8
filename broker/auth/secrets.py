"""Password hashing (argon2), random tokens and their lookup hashes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@dataclass(frozen=True)
class PasswordCost:
    """argon2id's work factors (``SUPPORTBROKER_PASSWORD_HASH_*``); the defaults are
    argon2-cffi's (RFC 9106's low-memory choice). A hash records its own cost, so hashes made
    under another cost still verify, and a login re-hashes them under the current one."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


DEFAULT_COST = PasswordCost()


@lru_cache(maxsize=8)
def _hasher(cost: PasswordCost) -> tuple[PasswordHasher, str]:
    hasher = PasswordHasher(
        time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism
    )
    # A hash of a random password under the same cost: verifying against it when the user
    # does not exist makes a failed login take the same time whether or not the name is real.
    return hasher, hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str, cost: PasswordCost = DEFAULT_COST) -> str:
    return _hasher(cost)[0].hash(password)


def verify_password(
    password: str, password_hash: str | None, cost: PasswordCost = DEFAULT_COST
) -> bool:
    hasher, dummy = _hasher(cost)
    try:
        return hasher.verify(password_hash or dummy, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str, cost: PasswordCost) -> bool:
    """True when ``password_hash`` was made under another cost than ``cost``."""
    try:
        return _hasher(cost)[0].check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


# argon2 holds a core for tens of milliseconds and releases the GIL while it works: off the
# event loop, other requests go on meanwhile (and a second core can take a second login).
async def hash_password_off_loop(password: str, cost: PasswordCost) -> str:
    return await asyncio.to_thread(hash_password, password, cost)


async def verify_password_off_loop(
    password: str, password_hash: str | None, cost: PasswordCost
) -> bool:
    return await asyncio.to_thread(verify_password, password, password_hash, cost)


def new_token(prefix: str) -> str:
    """A bearer secret like ``sbt_…``; the prefix tells a leaked token's kind at a glance."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def keyed_hash(key: str, value: str) -> str:
    """HMAC-SHA256 for low-entropy secrets (consent codes): useless without the server key."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def csrf_token_for(key: str, cookie_secret: str) -> str:
    """The CSRF token of the browser session whose cookie holds ``cookie_secret``.

    Derived, not stored: a page can always render it, a cross-site attacker (who cannot read
    the cookie) cannot compute it, and it never travels to the database, where debug logging
    of SQL parameters could show it.
    """
    return keyed_hash(key, f"csrf:{cookie_secret}")


def constant_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_password() -> str:
    return secrets.token_urlsafe(12)
