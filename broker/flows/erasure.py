"""Erasing a ticket: every copy of its personal data, and a record of the erasure that stays.

The data map (docs/AUDIT.md, "Personal data") is worked through in one transaction: the
ticket's subject and requester, its sessions' reasons, answers and rating comments, who
decided their consent (the typed name, the address, the browser), its comments to the desk
(those not yet delivered are dropped, the delivered ones blanked), refused webhook
deliveries that mention it; then the audit library destroys the ticket's data keys (every
event, recording and kept file of the ticket becomes unreadable) and seals ``ticket.erased``
in the ticket's chain and in the system stream, with the counts. Ids, times, states and
hashes stay, so the log and every bundle still verify.

Then the bytes go: SQLite zeroes freed space (``secure_delete``, broker.db.sqlite) and the
erasure checkpoints the WAL into the file and truncates it once committed; PostgreSQL keeps
dead row versions in its files until ``VACUUM FULL`` of the tables rewrites them (the
operator runs it, docs/AUDIT.md says which tables).
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import service as connectors
from broker.consent import service as consent
from broker.db.aftercommit import after_commit
from broker.errors import ValidationFailed
from broker.evidence import queries
from broker.notices import service as notices
from broker.sessions import service as sessions
from broker.tickets import service as tickets

log = structlog.get_logger("broker.flows")

# The tables an erasure rewrites: on PostgreSQL their old row versions stay in the files
# until ``VACUUM FULL`` of them (docs/AUDIT.md).
VACUUM_TABLES = (
    "tickets",
    "sessions",
    "consent_requests",
    "owner_notices",
    "connector_outbox",
    "connector_webhook_rejects",
)


async def erase_ticket(
    db: AsyncSession, principal: queries.Caller, ref: str, *, reason: str
) -> int:
    """Erase the ticket ``ref`` (``system:external_id``); returns the position of the erasure
    record in the system stream. ``Conflict`` (409) when nothing was sealed for the ticket
    since its last erasure, or the log never knew it."""
    system, sep, external_id = ref.partition(":")
    if not sep or not system or not external_id:
        raise ValidationFailed("ticket: give SYSTEM:EXTERNAL_ID")
    # A refused erasure leaves nothing changed even where the caller commits anyway (the
    # page renders the refusal and its request commits): the copies go with the record.
    async with db.begin_nested():
        counts = await forget(db, system, external_id)
        position = await queries.erase(db, principal, ref, reason=reason, details=counts)
    after_commit(db, purge, ref)
    log.info("ticket.erased", ticket=ref, **counts)
    return position


async def forget(db: AsyncSession, system: str, external_id: str) -> dict[str, Any]:
    """Blank or drop every plaintext copy of the ticket's personal data; the counts."""
    counts: dict[str, Any] = await connectors.forget_ticket(db, system, external_id)
    ticket = await tickets.forget_ticket(db, system, external_id)
    session_ids = [] if ticket is None else await sessions.forget_sessions(db, ticket)
    await consent.forget_decisions(db, session_ids)
    counts["owner_notices"] = await notices.forget_notices(db, session_ids)
    counts["sessions"] = len(session_ids)
    return counts


async def purge(db: AsyncSession, refs: list[str]) -> None:
    """After the commit: on SQLite move the WAL's pages (old versions of the rows) into the
    file, whose freed space ``secure_delete`` zeroes, and truncate the WAL. A reader that
    holds an old snapshot keeps the WAL alive (``busy``): then the next checkpoint does it."""
    engine: Any = db.bind
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        row = (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).first()
        await conn.commit()
    if row is not None and row[0]:
        log.warning("erasure.wal_busy", tickets=refs)
