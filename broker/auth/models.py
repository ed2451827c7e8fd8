"""Users, server-side web sessions and API tokens.

Secrets are stored only as hashes: argon2 for passwords, SHA-256 for high-entropy tokens
(a random 256-bit token needs no slow hash, and lookups by hash must be fast).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime


class Role(StrEnum):
    admin = "admin"
    technician = "technician"
    auditor = "auditor"
    supervisor = "supervisor"


class User(IdMixin, CreatedMixin, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False)
    email: Mapped[str | None] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Per-technician override of the concurrent-session limit (None: the settings' default).
    max_concurrent_sessions: Mapped[int | None] = mapped_column()


class WebSession(IdMixin, CreatedMixin, Base):
    """A logged-in browser. The cookie holds a random token; we keep its hash."""

    __tablename__ = "web_sessions"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # No CSRF column: the token is derived from the cookie (broker.auth.secrets.csrf_token_for).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ip: Mapped[str | None] = mapped_column(String(64))


class ApiToken(IdMixin, CreatedMixin, Base):
    """A bearer token for an API client (acting as its owner) or a ticket system (``system``)."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # A ticket-system token has no owner; it may act only on tickets of this system.
    system: Mapped[str | None] = mapped_column(String(50))
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(36))


class LoginThrottle(Base):
    """Failed logins per (account, client) (``pair:<digest>``), per account (``user:<name>``,
    the global guard) or per client (``ip:<address>``); see :mod:`broker.auth.throttle`.

    Kept in the database so every broker replica counts the same guesses.
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # The latest failure (the name is older than its meaning).
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The account a pair or guard row counts for (an admin's unlock clears them all).
    username: Mapped[str | None] = mapped_column(String(64))


class LoginKnownSource(Base):
    """An address an account signed in from: the account's guard lets it through."""

    __tablename__ = "login_known_sources"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_login_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
