"""Password hashing (argon2), random tokens and their lookup hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# A hash of a random password: verifying against it when the user does not exist makes a
# failed login take the same time whether or not the username is real.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


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
