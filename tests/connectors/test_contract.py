"""The TicketConnector contract: the same cases against every connector, null included.

Capabilities differ (null and osTicket take tickets as typed and take no comments); each
case states what a connector with or without the capability must do.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from broker.connectors import signing
from broker.connectors.base import INBOUND_EVENTS, OutboundMessage, TicketConnector, marker_line
from broker.errors import ConnectorError, NotAuthenticated, NotFound
from tests.connectors.harness import BROKER_URL, HOOK_SECRET, KINDS, Harness, harness


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest) -> Harness:
    return harness(request.param)


@pytest.fixture
async def connector(h: Harness):
    registry = h.registry()
    yield registry.get(h.kind)
    await registry.aclose()


def test_implements_the_port(connector: TicketConnector, h: Harness) -> None:
    assert isinstance(connector, TicketConnector)
    assert connector.system == h.kind


async def test_open_ticket(connector: TicketConnector, h: Harness) -> None:
    info = await connector.lookup_ticket(h.open_id)
    assert info.system == h.kind
    assert info.external_id == h.open_id
    assert info.is_open
    if connector.can_lookup:
        assert info.verified
        assert info.subject == h.subject
        assert info.url
        assert info.url.startswith("https://")
    else:
        assert not info.verified
        assert info.subject == ""


async def test_closed_ticket(connector: TicketConnector, h: Harness) -> None:
    info = await connector.lookup_ticket(h.closed_id)
    if connector.can_lookup:
        assert info.state == "closed"
        assert not info.is_open
        assert info.raw_state
    else:  # as typed: nothing says it is closed
        assert info.is_open


async def test_unknown_ticket(connector: TicketConnector, h: Harness) -> None:
    if not connector.can_lookup:
        assert (await connector.lookup_ticket(h.unknown_id)).verified is False
        return
    with pytest.raises(NotFound):
        await connector.lookup_ticket(h.unknown_id)


async def test_foreign_server_error_is_a_connector_error(
    connector: TicketConnector, h: Harness
) -> None:
    if not connector.can_lookup:
        pytest.skip(f"{h.kind} makes no lookup call")
    h.fake.fail_next = 10
    with pytest.raises(ConnectorError):
        await connector.lookup_ticket(h.open_id)


async def test_unreachable_is_a_connector_error_from_the_cause(
    connector: TicketConnector, h: Harness
) -> None:
    if not connector.can_lookup:
        pytest.skip(f"{h.kind} makes no lookup call")
    h.fake.down = True
    with pytest.raises(ConnectorError) as caught:
        await connector.lookup_ticket(h.open_id)
    assert caught.value.__cause__ is not None


async def test_internal_comment(connector: TicketConnector, h: Harness) -> None:
    text = "[supportbroker] Remote session requested\nReason: printer"
    if not connector.can_comment:
        if h.kind == "null":
            await connector.post_comment(h.open_id, text)
        else:
            with pytest.raises(ConnectorError):
                await connector.post_comment(h.open_id, text)
        assert h.fake.notes == []
        return
    await connector.post_comment(h.open_id, text, internal=True)
    (note,) = h.fake.notes
    assert note["ticket"] == h.open_id
    assert note["internal"] is True
    assert "Remote session requested" in note["text"]


async def test_deliver_outbox_message(connector: TicketConnector, h: Harness) -> None:
    message = OutboundMessage(
        delivery_id="d-1",
        system=h.kind,
        external_id=h.open_id,
        event_type="session.started",
        text="[supportbroker] Remote session started",
        data={"session_id": "s-1"},
        created_at=datetime.now(UTC),
    )
    await connector.deliver(message)  # no-op where comments are impossible
    if not connector.can_comment:
        assert h.fake.notes == []
    else:
        assert any("session started" in n["text"] for n in h.fake.notes) or any(
            e.get("type") == "session.started" for e in getattr(h.fake, "received", [])
        )


def test_deep_link(connector: TicketConnector, h: Harness) -> None:
    assert connector.deep_link(h.open_id) == f"{BROKER_URL}/t/{h.kind}/{h.open_id}/connect"
    assert connector.deep_link("a/b c").endswith("/a%2Fb%20c/connect")


def _signed(event_type: str, ticket_id: str, *, at: datetime, secret: str = HOOK_SECRET):
    body = json.dumps({"type": event_type, "ticket": {"id": ticket_id}}).encode()
    headers = signing.signed_headers(
        secret, body, delivery_id="del-1", event_type=event_type, now=at
    )
    return headers, body


def test_webhook_good(connector: TicketConnector, h: Harness) -> None:
    headers, body = _signed("ticket.closed", h.open_id, at=datetime.now(UTC))
    if h.kind == "null":
        with pytest.raises(NotAuthenticated):
            connector.verify_webhook(headers, body)
        return
    event = connector.verify_webhook(headers, body)
    assert (event.event_type, event.external_id, event.delivery_id) == (
        "ticket.closed",
        h.open_id,
        "del-1",
    )


def test_webhook_bad_signature(connector: TicketConnector, h: Harness) -> None:
    headers, body = _signed("ticket.closed", h.open_id, at=datetime.now(UTC), secret="wrong" * 8)
    with pytest.raises(NotAuthenticated):
        connector.verify_webhook(headers, body)
    good_headers, _ = _signed("ticket.closed", h.open_id, at=datetime.now(UTC))
    with pytest.raises(NotAuthenticated):  # body changed after signing
        connector.verify_webhook(good_headers, body.replace(b"closed", b"updated"))


def test_webhook_expired(connector: TicketConnector, h: Harness) -> None:
    headers, body = _signed("ticket.closed", h.open_id, at=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(NotAuthenticated, match=r"replay window|not a configured"):
        connector.verify_webhook(headers, body)


async def test_check(connector: TicketConnector, h: Harness) -> None:
    assert await connector.check()


async def test_a_retried_comment_is_not_posted_twice(
    connector: TicketConnector, h: Harness
) -> None:
    """A comment whose first try may have reached the desk (the broker died, or the answer
    was lost) is looked for by its marker before it is posted again; where the system
    cannot be read back, the retry carries the same delivery id for the receiver to drop."""
    marker = "sess-1/consent"
    text = f"[supportbroker] Remote session approved\n{marker_line(marker)}"
    first = OutboundMessage(
        delivery_id="d-7",
        system=h.kind,
        external_id=h.open_id,
        event_type="consent.decided",
        text=text,
        data={"session_id": "sess-1"},
        created_at=datetime.now(UTC),
        marker=marker,
    )
    await connector.deliver(first)
    await connector.deliver(replace(first, retry=True))
    if not connector.can_comment:
        assert h.fake.notes == []
        return
    received = getattr(h.fake, "received", None)
    if received is not None:  # the generic webhook: at-least-once, same delivery id
        assert [e["id"] for e in received] == ["d-7", "d-7"]
        return
    (note,) = h.fake.notes  # posted once (Freshdesk's copy is the HTML-escaped text)
    assert marker_line(marker) in note["text"]
    assert any(marker_line(marker) in t for t in await connector.comment_texts(h.open_id))


def test_the_desks_own_notification(connector: TicketConnector, h: Harness) -> None:
    """The published example of the connector's desk, signed as that desk signs it, is read;
    a connector whose system sends no webhooks of its own refuses a foreign one."""
    from tests.connectors.test_native_webhooks import DESKS, NOW

    desk = DESKS.get(h.kind)
    if desk is None:
        headers, body = DESKS["zammad"].request()
        with pytest.raises(NotAuthenticated):
            connector.verify_webhook(headers, body, now=NOW)
        return
    headers, body = desk.request()
    event = connector.verify_webhook(headers, body, now=NOW)
    assert event.external_id
    assert event.event_type in INBOUND_EVENTS
    forged_headers, forged = desk.request(secret="forged-" * 5)
    with pytest.raises(NotAuthenticated):
        connector.verify_webhook(forged_headers, forged, now=NOW)
