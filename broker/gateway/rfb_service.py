"""The rules of a desktop connection: who may send input, and what its end leaves in the log.

Input (keys, pointer, clipboard) passes only when the session was approved for ``control``
and the viewer may act: the session's technician or an invited expert (``join``). A
supervisor watching (``watch``) and every viewer of a ``view``-only session see the screen
and nothing they send reaches it. The end of each connection is sealed as
``session.desktop_closed`` with why it ended and how many input messages were dropped.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord

ACTING_MODES = frozenset({"control", "join"})


def may_input(record: SessionRecord, mode: str) -> bool:
    """Whether this viewer's keys, pointer and clipboard reach the device."""
    return "control" in record.session.capabilities and mode in ACTING_MODES


async def record_closed(
    maker: async_sessionmaker[AsyncSession], session_id: str, actor: Actor, data: dict[str, Any]
) -> None:
    """Seal the end of one viewer's desktop connection in its own transaction."""
    async with maker() as db, db.begin():
        record, _ = await sessions.load(db, session_id)
        await record_event(
            db,
            EventType.session_desktop_closed,
            ticket=record.ticket.ref,
            actor=actor,
            data={"session_id": session_id, **data},
        )
