"""The evidence digest a ticket receives when a session ends, taken when it is delivered.

Checkpoints are signed on a cadence, so when a session ends no checkpoint covers its last
event yet. The ``evidence.sealed`` comment is queued with the log position of that event
(known once the transaction's events are sealed, :func:`broker.evidence.service.on_sealed`)
and completed by the outbox worker at delivery (:func:`complete`): the digest is the
**first** signed checkpoint whose tree covers that position; if none does yet, one is signed
there and then by the worker, which takes the log's writer lock like any signer. The
completed text and facts are stored on the message, so a repeated delivery sends the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import schema
from audit.appender import Appended
from audit.checkpoint import parse_checkpoint
from broker.evidence.service import audit_log_of, on_sealed

POSITION = "audit_position"  # in the queued message's data: the event the digest must cover
PLACEHOLDER = "Audit evidence sealed for {ref}: the digest follows when it is delivered"


def placeholder_text(ticket_ref: str) -> str:
    return PLACEHOLDER.format(ref=ticket_ref)


class Queued(Protocol):
    data: dict[str, Any]


def cover_last_event(db: AsyncSession, stream: str, message: Queued) -> None:
    """Once this transaction's events are sealed, put the position of the last one of
    ``stream`` into the queued ``message``'s facts (flushed in the same commit)."""

    def _note(appended: list[Appended]) -> None:
        positions = [a.position for a in appended if a.stream == stream]
        if positions:  # a new dict: the JSON column sees the change
            message.data = {**message.data, POSITION: max(positions)}

    on_sealed(db, _note)


async def complete(db: AsyncSession, data: dict[str, Any]) -> dict[str, Any] | None:
    """The facts of a queued ``evidence.sealed`` message with its digest (``tree_size``,
    ``root_hash``, ``signed_at``) added; None for a message that needs none (completed
    already, or without a position). The connectors' outbox renders the text from them."""
    position = data.get(POSITION)
    if not isinstance(position, int) or "tree_size" in data:
        return None
    found = await _first_covering(db, position)
    if found is None:
        signed = await audit_log_of(db).sign_checkpoint(await db.connection())
        if signed is not None:
            found = (signed.note, datetime.now(UTC))
        else:
            # Another signer (a replica's cadence tick) covered the position between our read
            # and the writer lock; now that we hold the lock, its checkpoint is visible.
            found = await _first_covering(db, position)
        if found is None:  # the position is past the tree: the message is wrong
            raise ValueError(f"no checkpoint can cover audit position {position}")
    note, signed_at = found
    checkpoint = parse_checkpoint(note.partition("\n\n")[0] + "\n")
    return {
        **data,
        "tree_size": checkpoint.size,
        "root_hash": checkpoint.root.hex(),
        "signed_at": signed_at.isoformat(),
    }


async def _first_covering(db: AsyncSession, position: int) -> tuple[str, datetime] | None:
    """The first signed checkpoint whose tree holds ``position``: its note and time."""
    cp = schema.checkpoints.c
    stmt = select(cp.note, cp.created_at_us).where(cp.size > position).order_by(cp.size).limit(1)
    row = (await db.execute(stmt)).first()
    return None if row is None else (str(row[0]), datetime.fromtimestamp(int(row[1]) / 1e6, UTC))
