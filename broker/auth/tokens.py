"""API tokens: created by an admin (or the CLI), shown once, stored as SHA-256, revoked.

A token either acts as its owner (scopes must be a subset of the owner's role grants; the
owner's current role still bounds them at each use) or as a ticket system (``system``; only
``tickets:read``/``tickets:write``, and only on that system's tickets).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import ApiToken
from broker.auth.permissions import Scope, grants_for
from broker.auth.repository import ApiTokenRepository
from broker.auth.secrets import new_token, token_hash
from broker.auth.service import get_user
from broker.db.base import utcnow
from broker.errors import Conflict, NotFound, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event

TOKEN_PREFIX = "sbt"  # noqa: S105 - a label in front of the secret, not a secret
SYSTEM_SCOPES = frozenset({Scope.tickets_read, Scope.tickets_write})


async def list_tokens(db: AsyncSession) -> list[ApiToken]:
    return await ApiTokenRepository(db).list()


async def create_token(
    db: AsyncSession,
    *,
    actor: Actor,
    name: str,
    scopes: Iterable[Scope | str],
    owner_id: str | None = None,
    system: str | None = None,
    expires_in_days: int | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret (``sbt_…``), which is not kept and cannot be shown again."""
    try:
        wanted = frozenset(Scope(s) for s in scopes)
    except ValueError as exc:
        known = ", ".join(s.value for s in Scope)
        raise ValidationFailed(f"scopes: unknown scope ({exc}); known: {known}") from exc
    if not wanted:
        raise ValidationFailed("scopes: give at least one scope")
    if (owner_id is None) == (system is None):
        raise ValidationFailed("give exactly one of owner_id (a user) or system (a ticket system)")
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise ValidationFailed("expires_in_days must be between 1 and 3650")
    if owner_id is not None:
        owner = await get_user(db, owner_id)
        if not owner.is_active:
            raise ValidationFailed(f"user {owner.username!r} is disabled")
        allowed = grants_for(owner.role)
        beyond = "the role " + owner.role
    else:
        allowed = SYSTEM_SCOPES
        beyond = "a ticket-system token"
    extra = sorted(s.value for s in wanted - allowed)
    if extra:
        raise ValidationFailed(f"scopes beyond what {beyond} may hold: {', '.join(extra)}")
    secret = new_token(TOKEN_PREFIX)
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    token = await ApiTokenRepository(db).add(
        ApiToken(
            name=name,
            token_hash=token_hash(secret),
            prefix=secret[:10],
            owner_id=owner_id,
            system=system,
            scopes=sorted(s.value for s in wanted),
            expires_at=expires_at,
            created_by=actor.id,
        )
    )
    await record_event(
        db,
        EventType.token_created,
        ticket=None,
        actor=actor,
        data={
            "token_id": token.id,
            "name": name,
            "prefix": token.prefix,
            "owner_id": owner_id,
            "system": system,
            "scopes": token.scopes,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return token, secret


async def revoke_token(db: AsyncSession, *, actor: Actor, token_id: str) -> ApiToken:
    token = await ApiTokenRepository(db).get(token_id)
    if token is None:
        raise NotFound(f"no token {token_id}")
    if token.revoked_at is not None:
        raise Conflict(f"token {token.name!r} is already revoked")
    token.revoked_at = utcnow()
    await db.flush()
    await record_event(
        db,
        EventType.token_revoked,
        ticket=None,
        actor=actor,
        data={"token_id": token.id, "name": token.name, "prefix": token.prefix},
    )
    return token
