"""The audit event catalogue: one enum, the same table in docs/AUDIT.md, nothing else recorded.

An auditor and a SIEM read docs/AUDIT.md; the broker records ``EventType`` members only. The
table must list exactly the enum with the same meanings, ``record_event`` must refuse any
other name before writing, and the names the audit library writes itself (recordings,
erasure) and the ticket-system webhooks that become audit events must all be members.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from audit import recording
from audit.store import ERASED_EVENT
from broker.connectors.base import INBOUND_EVENTS
from broker.connectors.service import INBOUND_AUDIT
from broker.errors import AuditFailure
from broker.evidence.events import EventType, event_named
from broker.evidence.service import SYSTEM_ACTOR, record_event
from broker.sessions.states import SessionState
from broker.sessions.transitions import ARRIVED
from tests.factories import audit_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "AUDIT.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (.+?) \| (.+?) \|$")


def _table() -> list[tuple[str, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index("<!-- catalogue:start -->"), text.index("<!-- catalogue:end -->")
    rows = [ROW.match(line) for line in text[start:end].splitlines()]
    return [cast(tuple[str, str, str], m.groups()) for m in rows if m is not None]


def test_the_docs_table_is_the_enum() -> None:
    table = _table()
    assert [(name, meaning) for name, meaning, _ in table] == [
        (member.value, member.meaning) for member in EventType
    ]
    assert all(who.strip() and who.strip() != "?" for _, _, who in table)


def test_every_member_says_what_it_means() -> None:
    for member in EventType:
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", member.value), member
        assert member.name == member.value.replace(".", "_"), member
        assert 10 <= len(member.meaning) <= 90, member


def test_what_the_library_and_the_webhooks_write_is_catalogued() -> None:
    for name in (recording.STARTED, recording.CHUNK, recording.ENDED, ERASED_EVENT):
        assert event_named(name) is not None, name
    assert set(INBOUND_AUDIT) == set(INBOUND_EVENTS)
    assert set(ARRIVED) == set(SessionState)
    assert all(ARRIVED[state].value == f"session.{state.value}" for state in SessionState)


@pytest.mark.parametrize("name", ["session.teleported", "session.approved", ""])
async def test_record_event_refuses_a_name_outside_the_catalogue(
    app: Any, db: AsyncSession, name: str
) -> None:
    """A plain string is refused even when it spells a member: callers name the member."""
    with pytest.raises(AuditFailure, match="not in the catalogue"):
        await record_event(db, cast(EventType, name), ticket="t:1", actor=SYSTEM_ACTOR)
    await db.rollback()
    assert await audit_events(app, "t:1") == []
    await record_event(db, EventType.session_approved, ticket="t:1", actor=SYSTEM_ACTOR)
    await db.commit()
    assert [t for t, _ in await audit_events(app, "t:1")] == ["session.approved"]
