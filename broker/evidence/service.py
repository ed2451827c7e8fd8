"""``record_event``: every state change and security-relevant action goes through here.

The event is appended to the audit log inside the caller's transaction, so the change and its
evidence commit together or not at all. The audit log and the settings travel with the
database session (``session.info``), set once by :func:`broker.evidence.setup.bind`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit.store import Appended, AuditLog, NewEvent
from broker.errors import AuditFailure
from broker.evidence.events import EventType, event_named

SYSTEM_STREAM = "_system"


@dataclass(frozen=True)
class Actor:
    """Who did it. Goes into the encrypted payload, never into the cleartext header."""

    kind: str  # user | token | end_user | system | agent | ticket_system
    id: str | None = None
    name: str | None = None
    role: str | None = None
    ip: str | None = None

    def as_payload(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


SYSTEM_ACTOR = Actor(kind="system", name="supportbroker")


def audit_log_of(db: AsyncSession) -> AuditLog:
    log = db.info.get("audit_log")
    if log is None:
        raise AuditFailure("the audit log is not configured for this database session")
    if not isinstance(log, AuditLog):  # pragma: no cover - a wiring mistake
        raise AuditFailure("session.info['audit_log'] is not an AuditLog")
    return log


async def record_event(
    db: AsyncSession,
    event_type: EventType,
    *,
    ticket: str | None,
    actor: Actor,
    data: Mapping[str, Any] | None = None,
) -> Appended:
    """Append one audit event in the current transaction; raises AuditFailure if it cannot.

    Only the catalogue's events (:class:`broker.evidence.events.EventType`) are recorded: a
    name the catalogue does not explain is refused before anything is written."""
    if event_named(event_type) is not event_type:
        raise AuditFailure(f"audit event {event_type!r} is not in the catalogue (EventType)")
    payload: dict[str, Any] = {"actor": actor.as_payload(), "data": dict(data or {})}
    event = NewEvent(stream=ticket or SYSTEM_STREAM, event_type=event_type, payload=payload)
    log = audit_log_of(db)
    conn = await db.connection()
    try:
        (appended,) = await log.append(conn, [event])
    except AuditFailure:
        raise
    except Exception as exc:
        raise AuditFailure(f"could not record audit event {event_type}: {exc}") from exc
    return appended
