"""SQL for connector state: seen webhook deliveries and the outbox overview."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from broker.connectors.models import OutboxMessage, WebhookDelivery
from broker.db.repository import Repository


class WebhookDeliveryRepository(Repository[WebhookDelivery]):
    model = WebhookDelivery

    async def remember(
        self, system: str, delivery_id: str, at: datetime, *, keep_until: datetime | None = None
    ) -> bool:
        """Record a delivery id; False if it was already seen (a replay)."""
        if await self.db.get(WebhookDelivery, (system, delivery_id)) is not None:
            return False
        try:
            # A savepoint: losing a race to a concurrent copy must not spoil the transaction.
            async with self.db.begin_nested():
                self.db.add(
                    WebhookDelivery(
                        system=system, delivery_id=delivery_id, received_at=at,
                        keep_until=keep_until,
                    )
                )  # fmt: skip
        except IntegrityError:
            return False
        return True

    async def forget_before(self, now: datetime, *, default_age: timedelta) -> None:
        """Forget ids past their ``keep_until`` (rows without one: older than the age)."""
        expired = or_(
            WebhookDelivery.keep_until < now,
            and_(
                WebhookDelivery.keep_until.is_(None),
                WebhookDelivery.received_at < now - default_age,
            ),
        )
        await self.db.execute(delete(WebhookDelivery).where(expired))


class OutboxRepository(Repository[OutboxMessage]):
    model = OutboxMessage

    async def pending_by_system(self) -> dict[str, int]:
        stmt = (
            select(OutboxMessage.system, func.count())
            .where(OutboxMessage.delivered_at.is_(None))
            .group_by(OutboxMessage.system)
        )
        return {system: int(count) for system, count in (await self.db.execute(stmt)).all()}

    async def for_ticket(self, system: str, external_id: str) -> list[OutboxMessage]:
        stmt = (
            select(OutboxMessage)
            .where(OutboxMessage.system == system, OutboxMessage.external_id == external_id)
            .order_by(OutboxMessage.id)
        )
        return list((await self.db.scalars(stmt)).all())
