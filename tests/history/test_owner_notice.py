"""After an unattended session ends, the device owner is mailed its facts: queued with the
end, delivered through a real SMTP server (aiosmtpd on loopback), kept and retried while the
server is down, sealed as ``owner.notified``."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import update

from broker.db.base import utcnow
from broker.notices import service as notices
from broker.notices.mailer import NullMailer, SmtpMailer, mailer_for
from broker.notices.models import OwnerNotice
from broker.tasks import deliver_owner_notices
from tests.factories import (
    Desk,
    audit_events,
    bearer,
    consent_token,
    make_desk,
    make_token,
    make_user,
    open_session,
)

REF = "helpdesk:HD-4711"


class Sink:
    """An SMTP server's DATA handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_port() -> int:
    return _free_port()


@pytest.fixture
def sink(smtp_port: int) -> Iterator[tuple[Sink, Controller]]:
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    yield handler, controller
    if getattr(controller, "_thread", None) is not None:
        controller.stop()


async def _unattended_run(client: httpx.AsyncClient, desk: Desk) -> dict[str, Any]:
    created = await open_session(client, desk, unattended=True, reason="Nightly patch run on it")
    assert created["state"] == "approved"
    sid = created["id"]
    assert (await client.post(f"/api/v1/sessions/{sid}/start", headers=desk.headers)).is_success
    ended = await client.post(
        f"/api/v1/sessions/{sid}/end", json={"reason": "patched"}, headers=desk.headers
    )
    assert ended.status_code == 200, ended.text
    return created


async def _notices(app: Any, session_id: str) -> list[OwnerNotice]:
    async with app.state.sessionmaker() as db:
        return await notices.pending(db, session_id)


async def test_owner_is_mailed_and_a_down_server_loses_nothing(
    app: Any, client: httpx.AsyncClient, desk: Desk, sink: tuple[Sink, Controller], smtp_port: int
) -> None:
    handler, controller = sink
    settings = app.state.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_from": "sb@example.test"}
    )
    app.state.mailer = mailer_for(settings)
    assert isinstance(app.state.mailer, SmtpMailer)
    created = await _unattended_run(client, desk)
    [queued] = await _notices(app, created["id"])
    assert queued.recipient == "erika@example.test"

    # Nothing listens yet: the try fails, the notice stays owed with its error.
    assert await deliver_owner_notices(app) == 0
    [failed] = await _notices(app, created["id"])
    assert failed.sent_at is None
    assert failed.attempts == 1
    assert failed.last_error
    assert failed.next_attempt_at > utcnow()
    assert not [t for t, _ in await audit_events(app, REF) if t == "owner.notified"]

    controller.start()
    async with app.state.sessionmaker() as db:  # the back-off has run out
        await db.execute(update(OwnerNotice).values(next_attempt_at=utcnow()))
        await db.commit()
    assert await deliver_owner_notices(app) == 1
    assert await deliver_owner_notices(app) == 0  # sent once, not again
    [(to, message)] = handler.messages
    assert to == ["erika@example.test"]
    assert message["From"] == "sb@example.test"
    assert "unattended session ended" in message["Subject"]
    body = message.get_payload(decode=True).decode()
    for fact in (
        desk.tech.display_name,
        desk.device.name,
        "Nightly patch run on it",
        REF,
        "Printer offline",
        "see your screen",
        "use your mouse and keyboard",
        "Duration:",
        "allowed: 30 minutes",
        "ended (patched)",
    ):
        assert fact in body, fact
    [notified] = [p for t, p in await audit_events(app, REF) if t == "owner.notified"]
    assert notified["data"]["session_id"] == created["id"]
    assert notified["data"]["transport"] == "smtp"
    assert notified["data"]["attempts"] == 2


async def test_null_mailer_and_who_is_not_mailed(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    """Without SMTP the null mailer takes the notice, on record; attended sessions and
    owners without a mail address get none."""
    assert isinstance(app.state.mailer, NullMailer)  # no smtp_host in the test settings
    created = await _unattended_run(client, desk)
    assert await deliver_owner_notices(app) == 1
    [kept] = app.state.mailer.kept
    assert kept.recipient == "erika@example.test"
    [notified] = [p for t, p in await audit_events(app, REF) if t == "owner.notified"]
    assert notified["data"]["transport"] == "null"
    assert (await _notices(app, created["id"]))[0].sent_at is not None

    attended = await open_session(client, desk)
    decided = await client.post(
        f"/api/v1/consent/{consent_token(attended)}/decision",
        json={"decision": "approve", "name": "Erika"},
    )
    assert decided.status_code == 200
    sid = attended["id"]
    assert (await client.post(f"/api/v1/sessions/{sid}/start", headers=desk.headers)).is_success
    assert (await client.post(f"/api/v1/sessions/{sid}/end", headers=desk.headers)).is_success
    assert await _notices(app, sid) == []

    phone = await make_desk(app, unattended_allowed=True)
    async with app.state.sessionmaker() as db:
        from broker.devices.models import Device

        await db.execute(
            update(Device).where(Device.id == phone.device.id).values(owner_contact="+49 30 1234")
        )
        await db.commit()
    created = await _unattended_run(client, phone)
    assert await _notices(app, created["id"]) == []


async def test_erasing_the_ticket_drops_its_owner_notices(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    """The mail repeats the ticket's subject, the reason and names: erasure takes it, owed
    or sent, and says how many went."""
    created = await _unattended_run(client, desk)
    assert len(await _notices(app, created["id"])) == 1
    admin, _ = await make_user(app, "admin")
    erased = await client.post(
        f"/api/v1/audit/tickets/{REF.replace(':', '/')}/erase",
        json={"reason": "GDPR request 17"},
        headers=bearer(await make_token(app, admin)),
    )
    assert erased.status_code == 200, erased.text
    assert await _notices(app, created["id"]) == []
    assert await deliver_owner_notices(app) == 0
    [record] = [p for t, p in await audit_events(app, "_system") if t == "ticket.erased"]
    assert record["owner_notices"] == 1
