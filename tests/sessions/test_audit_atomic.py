"""The audit event of a change is written in the same transaction as the change: when the
event cannot be recorded, the change does not happen either (503 ``audit_failure``).

The audit log is swapped for a fake that refuses one event type and passes the rest to the
real log, the seam the services use (``session.info["audit_log"]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from audit.appender import Appended
from audit.store import AuditLog
from broker.consent.models import ConsentRequest
from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket
from tests.factories import Desk, audit_events, consent_token, open_session, request_session


class RefusingAuditLog(AuditLog):
    """The real log's keys and signer, but ``append`` fails on ``refuse`` (a full disk)."""

    def __init__(self, real: AuditLog, refuse: str) -> None:
        super().__init__(
            log_id=real.log_id, keys=real.keys, signer=real.signer, publisher=real.publisher
        )
        self.refuse = refuse

    async def append(self, conn: Any, events: Any, **kw: Any) -> list[Appended]:
        batch = getattr(events, "events", events)  # the broker passes them prepared
        if any(e.event_type == self.refuse for e in batch):
            raise OSError(28, "No space left on device")
        return await super().append(conn, events, **kw)


@pytest.fixture
def refuse(app: Any) -> Iterator[Any]:
    info = app.state.sessionmaker.kw["info"]
    real = info["audit_log"]

    def _refuse(event_type: str) -> None:
        info["audit_log"] = RefusingAuditLog(real, event_type)

    yield _refuse
    info["audit_log"] = real


async def count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def test_no_session_without_its_requested_event(
    app: Any, client: httpx.AsyncClient, desk: Desk, refuse: Any
) -> None:
    refuse("session.requested")
    response = await request_session(client, desk)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "audit_failure"
    assert "session.requested" in response.json()["detail"]
    assert await count(app, RemoteSession) == 0
    assert await count(app, Ticket) == 0  # created in the same transaction, gone with it
    assert await audit_events(app, "helpdesk:HD-4711") == []


async def test_no_approval_without_its_event(
    app: Any, client: httpx.AsyncClient, desk: Desk, refuse: Any
) -> None:
    created = await open_session(client, desk)
    before = await audit_events(app, "helpdesk:HD-4711")
    refuse("session.approved")
    token = consent_token(created)
    decided = await client.post(
        f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 503, decided.text
    assert decided.json()["error"] == "audit_failure"
    # Neither the session's move nor the consent's decision was kept ...
    got = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
    assert got.json()["state"] == "awaiting_consent"
    async with app.state.sessionmaker() as db:
        request = await db.scalar(select(ConsentRequest))
        assert request is not None
        assert request.decision is None
        assert request.decided_by is None
    assert await audit_events(app, "helpdesk:HD-4711") == before
    # ... so once the log works again the same link can still decide.
    refuse("nothing")
    retry = await client.post(
        f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": "Erika"}
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["state"] == "approved"
