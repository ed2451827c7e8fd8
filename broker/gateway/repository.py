"""SQL for enrollment tokens and agent keys, and what the gateway reads about sessions."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.consent.models import ConsentRequest
from broker.db.repository import Repository
from broker.gateway.models import AgentEnrollmentToken, AgentKey
from broker.sessions.models import RemoteSession
from broker.sessions.states import SessionState

PROVIDER = "agent"  # the built-in agent's sessions (the gateway serves no others)
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
    db: AsyncSession, device_ids: Collection[str]
) -> list[tuple[str, str, str, bool, datetime | None]]:
    """(session id, device id, state, unattended, deadline) of open sessions on these devices.

    Selected by provider and state (few rows, indexed by state) and filtered here: an ``IN``
    over every connected device would grow with idle agents, which vastly outnumber sessions.
    """
    stmt = select(
        RemoteSession.id,
        RemoteSession.device_id,
        RemoteSession.state,
        RemoteSession.unattended,
        RemoteSession.deadline_at,
    ).where(RemoteSession.provider == PROVIDER, RemoteSession.state.in_(OPEN))
    rows = (await db.execute(stmt)).all()
    return [tuple(row) for row in rows if row[1] in device_ids]  # type: ignore[misc]


@dataclass(frozen=True)
class Outcome:
    """How a session's request was settled, as far as the device needs to know it."""

    state: str
    end_reason: str | None
    ended_by: str | None
    web_decision: str | None  # approve | deny when decided on the consent page
    web_decided_by: str | None


async def outcomes(db: AsyncSession, session_ids: Collection[str]) -> dict[str, Outcome]:
    """The state of each session and who settled it (the web decision, if there was one)."""
    if not session_ids:
        return {}
    stmt = (
        select(
            RemoteSession.id,
            RemoteSession.state,
            RemoteSession.end_reason,
            RemoteSession.ended_by,
            ConsentRequest.decision,
            ConsentRequest.decided_by,
        )
        .outerjoin(ConsentRequest, ConsentRequest.session_id == RemoteSession.id)
        .where(RemoteSession.id.in_(list(session_ids)))
    )
    return {row[0]: Outcome(*row[1:]) for row in (await db.execute(stmt)).all()}
