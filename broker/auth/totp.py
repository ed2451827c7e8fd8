"""TOTP second factor (RFC 6238 over RFC 4226 HOTP), implemented with ``hmac``.

An account enables TOTP in two steps: :func:`begin_enrollment` stores a new secret, not yet
confirmed, and the user proves their authenticator app has it by sending a current code to
:func:`confirm_enrollment`. From then on :func:`verify_login_code` is asked after the
password. The secret is kept encrypted (AES-256-GCM under a key derived from the broker's
``secret_key``); a used time step is remembered so a code cannot be replayed. The table is
this module's own (``user_totp``), one row per user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from datetime import datetime
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ForeignKey, Integer, LargeBinary
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from broker.auth import throttle
from broker.auth.models import User
from broker.auth.principal import Principal
from broker.context import settings_of
from broker.db.base import Base, CreatedMixin, UTCDateTime, utcnow
from broker.errors import Conflict, NotAuthenticated, RateLimited, ValidationFailed
from broker.evidence import refusals
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1  # accept one step either side: clocks drift and people type slowly
ISSUER = "supportbroker"
TOTP_FAILED = "the authentication code is wrong or was already used"


# --- RFC 4226 / RFC 6238 ------------------------------------------------------------------


def hotp(key: bytes, counter: int, *, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226: HMAC the 8-byte counter, dynamic truncation, ``digits`` decimal digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def time_step(unix_time: float, *, step: int = STEP_SECONDS, t0: int = 0) -> int:
    return int((unix_time - t0) // step)


def totp(
    key: bytes, unix_time: float, *, digits: int = DIGITS, digest: str = "sha1", step: int = 30
) -> str:
    """RFC 6238: HOTP over the number of ``step``-second intervals since the epoch."""
    return hotp(key, time_step(unix_time, step=step), digits=digits, digest=digest)


def matching_step(key: bytes, code: str, unix_time: float, *, window: int = WINDOW) -> int | None:
    """The time step (within ``window`` of now) whose code is ``code``, compared in constant
    time; None if none matches."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    now = time_step(unix_time)
    found = None
    for candidate in range(now - window, now + window + 1):
        if hmac.compare_digest(hotp(key, candidate), code):
            found = candidate
    return found


def new_secret() -> bytes:
    return secrets.token_bytes(20)  # 160 bits, the RFC 4226 recommendation for SHA-1


def b32(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


def provisioning_uri(key: bytes, account: str) -> str:
    """The ``otpauth://`` URI authenticator apps import (shown as text; no QR library)."""
    label = quote(f"{ISSUER}:{account}")
    query = urlencode(
        {"secret": b32(key), "issuer": ISSUER, "digits": DIGITS, "period": STEP_SECONDS}
    )
    return f"otpauth://totp/{label}?{query}"


# --- storage ------------------------------------------------------------------------------


class UserTotp(CreatedMixin, Base):
    """A user's TOTP secret (encrypted), whether it is confirmed, and the last step used."""

    __tablename__ = "user_totp"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_box: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_step: Mapped[int | None] = mapped_column(Integer)


def _box_key(db: AsyncSession) -> bytes:
    secret = settings_of(db).secret_key.get_secret_value()
    return hashlib.sha256(b"supportbroker/totp/v1\x00" + secret.encode()).digest()


def _seal(db: AsyncSession, user_id: str, key: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_box_key(db)).encrypt(nonce, key, user_id.encode())


def _open(db: AsyncSession, row: UserTotp) -> bytes:
    box = row.secret_box
    return AESGCM(_box_key(db)).decrypt(box[:12], box[12:], row.user_id.encode())


async def _row(db: AsyncSession, user_id: str) -> UserTotp | None:
    return await db.get(UserTotp, user_id)


async def is_enabled(db: AsyncSession, user_id: str) -> bool:
    row = await _row(db, user_id)
    return row is not None and row.confirmed_at is not None


async def begin_enrollment(db: AsyncSession, principal: Principal) -> tuple[str, str]:
    """A new, unconfirmed secret for the caller: returns (base32 secret, otpauth URI)."""
    if principal.kind != "user" or principal.user_id is None:
        raise ValidationFailed("only a logged-in user sets up their own second factor")
    row = await _row(db, principal.user_id)
    if row is not None and row.confirmed_at is not None:
        raise Conflict("the second factor is already enabled; disable it first")
    key = new_secret()
    if row is None:
        db.add(UserTotp(user_id=principal.user_id, secret_box=_seal(db, principal.user_id, key)))
    else:
        row.secret_box, row.last_step = _seal(db, principal.user_id, key), None
    await db.flush()
    user = await db.get(User, principal.user_id)
    account = user.username if user is not None else principal.name
    return b32(key), provisioning_uri(key, account)


async def pending_secret(db: AsyncSession, user_id: str) -> tuple[str, str] | None:
    """The unconfirmed secret (base32, URI) while enrollment is under way, else None."""
    row = await _row(db, user_id)
    if row is None or row.confirmed_at is not None:
        return None
    user = await db.get(User, user_id)
    key = _open(db, row)
    return b32(key), provisioning_uri(key, user.username if user else user_id)


async def confirm_enrollment(db: AsyncSession, principal: Principal, code: str) -> None:
    """Turn the pending secret on once ``code`` proves the app has it. Audited."""
    row = await _row(db, principal.user_id or "")
    if row is None or row.confirmed_at is not None:
        raise Conflict("no second-factor set-up is under way; start it again")
    step = matching_step(_open(db, row), code, time.time())
    if step is None:
        raise ValidationFailed("that code does not match; check the clock of your device")
    row.confirmed_at, row.last_step = utcnow(), step
    await db.flush()
    await record_event(
        db, EventType.auth_totp_enabled, ticket=None, actor=principal.actor(), data={}
    )


async def disable(db: AsyncSession, principal: Principal, code: str) -> None:
    """Turn the second factor off; a current code is required. Audited."""
    row = await _row(db, principal.user_id or "")
    if row is None or row.confirmed_at is None:
        raise Conflict("the second factor is not enabled")
    if _accept(db, row, code) is None:
        raise ValidationFailed(TOTP_FAILED)
    await db.delete(row)
    await db.flush()
    await record_event(
        db, EventType.auth_totp_disabled, ticket=None, actor=principal.actor(), data={}
    )


async def admin_reset(db: AsyncSession, actor: Actor, user: User) -> bool:
    """An admin removes a user's second factor (lost phone); False if there was none."""
    row = await _row(db, user.id)
    if row is None:
        return False
    await db.delete(row)
    await db.flush()
    await record_event(
        db,
        EventType.auth_totp_reset,
        ticket=None,
        actor=actor,
        data={"user_id": user.id, "username": user.username},
    )
    return True


def _accept(db: AsyncSession, row: UserTotp, code: str) -> int | None:
    """The matching step if it is newer than the last one used (no replay), else None."""
    step = matching_step(_open(db, row), code, time.time())
    if step is None or (row.last_step is not None and step <= row.last_step):
        return None
    row.last_step = step
    return step


async def verify_login_code(db: AsyncSession, user: User, code: str, ip: str) -> None:
    """The second step of a login: a fresh code, or NotAuthenticated / RateLimited.

    Wrong codes count toward the same waits as wrong passwords and are audited; a refusal
    during a wait is tallied per source and minute (broker.evidence.refusals).
    """
    now = utcnow()
    actor = Actor(kind="anonymous", name=user.username, ip=ip)
    lock = await throttle.check(db, user.username, ip, now)
    if lock is not None:
        await refusals.tally(db, refusals.LOGIN, ip, now)
        raise RateLimited(
            f"too many failed logins; try again in {lock.in_words}",
            retry_after=lock.retry_after,
            keep_changes=True,
        )
    why = None
    row = await _row(db, user.id)
    if why is None and (row is None or row.confirmed_at is None):
        why = "no second factor enabled"
    if why is None and row is not None and _accept(db, row, code) is None:
        why = "wrong or reused code"
        await throttle.charge(db, user.username, ip, now)
    if why is not None:
        await record_event(
            db,
            EventType.auth_login_failed,
            ticket=None,
            actor=actor,
            data={"username": user.username, "why": f"second factor: {why}"},
        )
        raise NotAuthenticated(TOTP_FAILED, keep_changes=True)
    await db.flush()
