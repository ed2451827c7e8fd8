"""SQL for enrollment tokens and agent keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.repository import Repository
from broker.gateway.models import AgentEnrollmentToken, AgentKey
from broker.sessions.models import RemoteSession
from broker.sessions.states import SessionState

OPEN = (SessionState.awaiting_consent, SessionState.approved, SessionState.active)


class TokenRepository(Repository[AgentEnrollmentToken]):
    model = AgentEnrollmentToken

    async def by_hash(self, token_hash: str) -> AgentEnrollmentToken | None:
        stmt = select(AgentEnrollmentToken).where(AgentEnrollmentToken.token_hash == token_hash)
        return await self.db.scalar(stmt.with_for_update())

    async def consume(self, token_id: str, device_id: str, now: datetime) -> bool:
        """Mark used if still unused: the single winner of two racing enrollments."""
        result = await self.db.execute(
            update(AgentEnrollmentToken)
            .where(AgentEnrollmentToken.id == token_id, AgentEnrollmentToken.used_at.is_(None))
            .values(used_at=now, used_by_device_id=device_id)
        )
        return bool(getattr(result, "rowcount", 0))


class AgentKeyRepository(Repository[AgentKey]):
    model = AgentKey

    async def by_fingerprint(self, fingerprint: str) -> AgentKey | None:
        return await self.db.scalar(select(AgentKey).where(AgentKey.fingerprint == fingerprint))

    async def connected_to(self, node: str) -> list[AgentKey]:
        stmt = select(AgentKey).where(AgentKey.connected_node == node)
        return list((await self.db.scalars(stmt)).all())


async def open_sessions(
    db: AsyncSession, device_ids: list[str]
) -> list[tuple[str, str, str, bool, datetime | None]]:
    """(session id, device id, state, unattended, deadline) of open sessions on these devices."""
    stmt = select(
        RemoteSession.id,
        RemoteSession.device_id,
        RemoteSession.state,
        RemoteSession.unattended,
        RemoteSession.deadline_at,
    ).where(RemoteSession.device_id.in_(device_ids), RemoteSession.state.in_(OPEN))
    return [tuple(row) for row in (await db.execute(stmt)).all()]  # type: ignore[misc]
