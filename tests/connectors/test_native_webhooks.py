"""Each desk's own notification, from the example its docs publish (tests/connectors/fixtures),
signed the way its docs describe, computed here independently of the broker's code.

- Zammad: ``X-Hub-Signature: sha1=<hex HMAC-SHA1(token, body)>``; freshness from the signed
  ``ticket.updated_at``.
- Jira: ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>``; the body's
  ``timestamp`` (ms) must be fresh.
- GLPI 11: ``X-GLPI-signature: <hex HMAC-SHA256(secret, body + timestamp)>`` and
  ``X-GLPI-timestamp``.
- Freshdesk: no signature; basic authentication (user : secret) or a secret header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.connectors.base import WebhookEvent
from broker.errors import NotAuthenticated, ValidationFailed
from tests.connectors.fixtures import Fixture, load
from tests.connectors.harness import HOOK_SECRET, harness

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@dataclass
class Desk:
    kind: str
    fixture: Fixture
    # body values that make the example fresh and about one of the harness's tickets
    fresh: Callable[[datetime], dict[str, Any]]
    sign: Callable[[bytes, str, datetime], dict[str, str]]

    def request(
        self, *, secret: str = HOOK_SECRET, at: datetime = NOW, **values: Any
    ) -> tuple[dict[str, str], bytes]:
        body = self.fixture.with_values(**{**self.fresh(at), **values})
        headers, raw = self.fixture.request(body, signature="", timestamp="", basic="")
        return {**headers, **self.sign(raw, secret, at)}, raw


def _zammad_sign(body: bytes, secret: str, at: datetime) -> dict[str, str]:
    mac = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {"X-Hub-Signature": f"sha1={mac}"}


def _jira_sign(body: bytes, secret: str, at: datetime) -> dict[str, str]:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature": f"sha256={mac}"}


def _glpi_sign(body: bytes, secret: str, at: datetime) -> dict[str, str]:
    stamp = str(int(at.timestamp()))
    mac = hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    return {"X-GLPI-signature": mac, "X-GLPI-timestamp": stamp}


def _freshdesk_sign(body: bytes, secret: str, at: datetime) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"freshdesk:{secret}".encode()).decode()}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


DESKS = {
    "zammad": Desk(
        "zammad",
        load("zammad", "trigger_webhook.http"),
        lambda at: {"ticket__id": 11, "ticket__updated_at": _iso(at)},
        _zammad_sign,
    ),
    "jira": Desk(
        "jira",
        load("jira", "issue_updated.http"),
        lambda at: {"timestamp": int(at.timestamp() * 1000), "issue__key": "HD-51"},
        _jira_sign,
    ),
    "glpi": Desk("glpi", load("glpi", "ticket_update.http"), lambda at: {}, _glpi_sign),
    "freshdesk": Desk(
        "freshdesk", load("freshdesk", "trigger_webhook.http"), lambda at: {}, _freshdesk_sign
    ),
}
# What each published example says: ticket, state, assignee, group.
EXPECTED = {
    "zammad": ("11", "open", "emma@chrispresso.com", "Service Desk"),
    "jira": ("HD-51", "In Progress", "Bryan Rollins [Atlassian]", None),
    "glpi": ("21", "processing (assigned)", "tom", "Service Desk"),
    "freshdesk": ("61", "open", "tom@acme.example", "Service Desk"),
}


@pytest.fixture(params=sorted(DESKS))
def desk(request: pytest.FixtureRequest) -> Desk:
    return DESKS[request.param]


def verify(desk: Desk, headers: dict[str, str], body: bytes, now: datetime = NOW) -> WebhookEvent:
    connector = harness(desk.kind).registry().get(desk.kind)
    return connector.verify_webhook(headers, body, now=now)


def test_every_fixture_cites_its_docs(desk: Desk) -> None:
    assert any(s.startswith("source: https://") for s in desk.fixture.sources)
    assert desk.fixture.start.startswith("POST /api/v1/connectors/")


def test_the_published_example_is_read(desk: Desk) -> None:
    headers, body = desk.request()
    event = verify(desk, headers, body)
    ticket, state, assignee, group = EXPECTED[desk.kind]
    assert (event.external_id, event.state, event.assignee) == (ticket, state, assignee)
    assert event.assignee_known
    assert event.group == group
    assert event.closed is False
    assert event.event_type == "ticket.updated"
    if desk.kind == "freshdesk":
        assert event.delivery_id is None  # Freshdesk sends no id and no timestamp
    else:
        assert event.delivery_id  # what a replay repeats: the signature over signed content


def test_a_forged_signature_is_refused(desk: Desk) -> None:
    headers, body = desk.request(secret="not-the-secret-" * 2)
    with pytest.raises(NotAuthenticated):
        verify(desk, headers, body)


def test_an_altered_body_is_refused(desk: Desk) -> None:
    headers, body = desk.request()
    if desk.kind == "freshdesk":
        headers["Authorization"] = "Basic " + base64.b64encode(b"freshdesk:wrong").decode()
        with pytest.raises(NotAuthenticated, match="basic authentication"):
            verify(desk, headers, body)
        return
    with pytest.raises(NotAuthenticated, match="does not match"):
        verify(desk, headers, body.replace(b'"', b" ", 1) + b"")


def test_a_missing_signature_is_refused(desk: Desk) -> None:
    headers, body = desk.request()
    kept = {k: v for k, v in headers.items() if "signature" not in k.lower()}
    kept.pop("Authorization", None)
    with pytest.raises(NotAuthenticated):
        verify(desk, kept, body)


def test_a_stale_delivery_is_refused(desk: Desk) -> None:
    if desk.kind == "freshdesk":
        pytest.skip("Freshdesk sends no timestamp: there is nothing to be stale")
    headers, body = desk.request(at=NOW - timedelta(hours=1))
    with pytest.raises(NotAuthenticated, match="replay window"):
        verify(desk, headers, body)


def test_a_signed_body_we_cannot_read_is_invalid(desk: Desk) -> None:
    raw = b'{"not": "a ticket"}'
    headers = desk.sign(raw, HOOK_SECRET, NOW)
    if desk.kind == "jira":  # Jira's freshness comes first: give it a fresh stamp
        raw = b'{"timestamp": %d, "webhookEvent": "jira:issue_updated"}' % (NOW.timestamp() * 1000)
        headers = desk.sign(raw, HOOK_SECRET, NOW)
    with pytest.raises(ValidationFailed):
        verify(desk, headers, raw)
    garbage = b"\x00not json"
    with pytest.raises(ValidationFailed, match="not JSON"):
        verify(desk, desk.sign(garbage, HOOK_SECRET, NOW), garbage)


def test_our_signed_format_still_passes_for_relays(desk: Desk) -> None:
    import json

    from broker.connectors import signing

    body = json.dumps({"type": "ticket.closed", "ticket": {"id": "7"}}).encode()
    headers = signing.signed_headers(
        HOOK_SECRET, body, delivery_id="relay-1", event_type="ticket.closed", now=NOW
    )
    event = verify(desk, headers, body)
    assert (event.event_type, event.external_id, event.source) == ("ticket.closed", "7", "relay")


CLOSING = {
    "zammad": ({"ticket__state": "closed"}, "ticket.closed"),
    "jira": (
        {
            "issue__fields__status": {"name": "Done", "statusCategory": {"key": "done"}},
            "changelog__items": [{"field": "status", "fromString": "Open", "toString": "Done"}],
        },
        "ticket.closed",
    ),
    "glpi": ({"item__status": {"id": 6, "name": "Closed"}}, "ticket.closed"),
    "freshdesk": ({"freshdesk_webhook__ticket_status": "Closed"}, "ticket.closed"),
}
MERGING = {
    "zammad": {"ticket__state": "merged"},
    "jira": {
        "changelog__items": [{"field": "resolution", "fromString": None, "toString": "Duplicate"}]
    },
}


def test_a_closed_ticket_is_read_as_closed(desk: Desk) -> None:
    values, kind = CLOSING[desk.kind]
    headers, body = desk.request(**values)
    event = verify(desk, headers, body)
    assert (event.event_type, event.closed) == (kind, True)


@pytest.mark.parametrize("kind", sorted(MERGING))
def test_a_merge_is_read_as_a_merge(kind: str) -> None:
    desk = DESKS[kind]
    headers, body = desk.request(**MERGING[kind])
    assert verify(desk, headers, body).event_type == "ticket.merged"


def test_glpi_new_and_delete_events() -> None:
    desk = DESKS["glpi"]
    headers, body = desk.request(event="new")
    assert verify(desk, headers, body).event_type == "ticket.created"
    headers, body = desk.request(event="delete")
    deleted = verify(desk, headers, body)
    assert (deleted.event_type, deleted.state, deleted.closed) == ("ticket.closed", "deleted", True)


def test_jira_events_it_does_not_handle_are_invalid() -> None:
    desk = DESKS["jira"]
    headers, body = desk.request(webhookEvent="comment_created")
    with pytest.raises(ValidationFailed, match="not handled"):
        verify(desk, headers, body)


def test_zammad_nobody_is_no_assignee() -> None:
    desk = DESKS["zammad"]
    headers, body = desk.request(ticket__owner={"login": "-", "id": 1}, ticket__owner_id=1)
    event = verify(desk, headers, body)
    assert event.assignee is None
    assert event.assignee_known


def test_freshdesk_secret_header_is_accepted_too() -> None:
    desk = DESKS["freshdesk"]
    headers, body = desk.request()
    headers.pop("Authorization")
    headers["X-Supportbroker-Token"] = HOOK_SECRET
    assert verify(desk, headers, body).external_id == "61"
    headers["X-Supportbroker-Token"] = HOOK_SECRET + "x"
    with pytest.raises(NotAuthenticated):
        verify(desk, headers, body)
