"""SQL for consent requests and the per-client throttle rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError

from broker.consent.models import ConsentClientThrottle, ConsentRequest
from broker.db.repository import Repository


class ConsentRepository(Repository[ConsentRequest]):
    model = ConsentRequest

    async def by_token_hash(self, digest: str) -> ConsentRequest | None:
        return await self.db.scalar(
            select(ConsentRequest).where(ConsentRequest.token_hash == digest)
        )

    async def by_lookup(self, lookup: str) -> ConsentRequest | None:
        return await self.db.scalar(
            select(ConsentRequest).where(ConsentRequest.lookup == lookup).with_for_update()
        )

    async def by_session(self, session_id: str) -> ConsentRequest | None:
        return await self.db.scalar(
            select(ConsentRequest).where(ConsentRequest.session_id == session_id)
        )

    async def release_stale_lookup(self, lookup: str, now: datetime) -> None:
        """Free ``lookup`` if it belongs to a request that can no longer be decided."""
        await self.db.execute(
            update(ConsentRequest)
            .where(
                ConsentRequest.lookup == lookup,
                (ConsentRequest.expires_at <= now)
                | ConsentRequest.decision.is_not(None)
                | ConsentRequest.locked_at.is_not(None),
            )
            .values(lookup=None, handoff_box=None)
            .execution_options(synchronize_session="fetch")
        )

    async def decide(self, request_id: str, values: dict[str, Any]) -> bool:
        """Record a decision once: the first writer wins, a second finds no undecided row."""
        stmt = (
            update(ConsentRequest)
            .where(
                ConsentRequest.id == request_id,
                ConsentRequest.decision.is_(None),
                ConsentRequest.locked_at.is_(None),
            )
            .values(lookup=None, handoff_box=None, **values)
            .execution_options(synchronize_session=False)
        )
        result = cast(CursorResult[Any], await self.db.execute(stmt))
        return result.rowcount == 1


class ThrottleRepository(Repository[ConsentClientThrottle]):
    model = ConsentClientThrottle

    async def locked_row(self, client_key: str, now: datetime) -> ConsentClientThrottle:
        """The client's row, locked for this transaction (created on first use)."""
        stmt = (
            select(ConsentClientThrottle)
            .where(ConsentClientThrottle.client_key == client_key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = await self.db.scalar(stmt)
        if row is not None:
            return row
        try:
            # A savepoint: two first attempts from one client race on the primary key.
            async with self.db.begin_nested():
                row = ConsentClientThrottle(
                    client_key=client_key, failures=0, window_started_at=now
                )
                self.db.add(row)
        except IntegrityError:
            row = await self.db.scalar(stmt)
            assert row is not None  # the racing insert committed it
        return row
