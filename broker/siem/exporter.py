"""One exporter loop per configured SIEM target, started with the broker's background tasks.

The loop sends batch after batch while records wait, polls every ``siem_poll_seconds`` when
the target is caught up, and after a failed delivery waits ``siem_retry_seconds``, doubling
per failure in a row up to ``siem_retry_max_seconds`` (broker.backoff), then sends the same
batch again. A failure is logged and noted on the cursor; it never stops the loop.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.backoff import wait_after
from broker.config import Settings, SiemTarget
from broker.errors import SiemDeliveryError
from broker.siem.service import export_batch, record_failure
from broker.siem.transport import Sender, sender_for

log = structlog.get_logger("broker.siem")


async def run_exporter(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    target: SiemTarget,
    sender: Sender | None = None,
) -> None:
    """Export to ``target`` until cancelled."""
    sender = sender or sender_for(target, settings.audit_log_id)
    failures = 0
    try:
        while True:
            try:
                sent = await export_batch(maker, target, sender, settings.siem_batch_size)
            except SiemDeliveryError as exc:
                failures = await record_failure(maker, target.name, exc.detail)
                log.warning("siem.delivery_failed", target=target.name, error=exc.detail)
                await asyncio.sleep(_retry_wait(settings, failures))
                continue
            except Exception as exc:  # the database, most likely: logged, tried again later
                failures += 1
                log.error("siem.export_failed", target=target.name, exc_info=exc)
                await asyncio.sleep(_retry_wait(settings, failures))
                continue
            failures = 0
            if sent < settings.siem_batch_size:  # caught up: look again after a while
                await asyncio.sleep(settings.siem_poll_seconds)
    finally:
        await sender.close()


def _retry_wait(settings: Settings, failures: int) -> float:
    base = timedelta(seconds=settings.siem_retry_seconds)
    wait = wait_after(failures - 1, free=0, base=base).total_seconds()
    return min(wait, settings.siem_retry_max_seconds)
