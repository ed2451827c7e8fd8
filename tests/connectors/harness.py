"""One harness per connector kind: a fake system with an open and a closed ticket, and the
configuration entry that points a connector at it. Shared by the contract tests and the
service/outbox tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.connectors.registry import ConnectorRegistry
from tests.connectors.fakes import FakeBase
from tests.connectors.fakes.freshdesk import API_KEY as FD_KEY
from tests.connectors.fakes.freshdesk import FakeFreshdesk
from tests.connectors.fakes.glpi import APP_TOKEN, USER_TOKEN, FakeGlpi
from tests.connectors.fakes.jira import API_TOKEN, EMAIL, FakeJira
from tests.connectors.fakes.osticket import API_KEY as OST_KEY
from tests.connectors.fakes.osticket import FakeOsTicket
from tests.connectors.fakes.webhook import SECRET, FakeReceiver
from tests.connectors.fakes.zammad import TOKEN, FakeZammad

BROKER_URL = "https://broker.example"
HOOK_SECRET = "inbound-hook-secret-abcdefghij"
KINDS = ["null", "webhook", "zammad", "glpi", "osticket", "osticket-api", "jira", "freshdesk"]


@dataclass
class Harness:
    kind: str
    fake: FakeBase
    entry: dict[str, Any]
    open_id: str
    closed_id: str
    unknown_id: str
    subject: str = "Printer on fire"

    def registry(self, system: str | None = None) -> ConnectorRegistry:
        entries = {} if self.kind == "null" else {system or self.kind: self.entry}
        return ConnectorRegistry(entries, broker_url=BROKER_URL, transport=self.fake.transport())


def harness(kind: str) -> Harness:
    common = {"webhook_secret": HOOK_SECRET}
    if kind == "null":
        return Harness(kind, FakeBase(), {"kind": "null"}, "HD-4711", "HD-4712", "HD-0")
    if kind == "webhook":
        fake = FakeReceiver()
        fake.add("4711", subject="Printer on fire", state="open")
        fake.add("4712", subject="old", state="closed")
        entry = {
            "kind": "webhook",
            "base_url": "https://helpdesk.example",
            "url": "https://helpdesk.example/hook",
            "lookup_url": "/tickets/{external_id}",
            "secret": SECRET,
            **common,
        }
        return Harness(kind, fake, entry, "4711", "4712", "999")
    if kind == "zammad":
        fake = FakeZammad()
        fake.add(11, title="Printer on fire", state="open", owner="tom")
        fake.add(12, title="old", state="closed")
        entry = {"kind": "zammad", "base_url": "https://desk.example", "token": TOKEN, **common}
        return Harness(kind, fake, entry, "11", "12", "99")
    if kind == "glpi":
        fake = FakeGlpi()
        fake.add(21, title="Printer on fire", status=2, tech="tom")
        fake.add(22, title="old", status=6)
        entry = {
            "kind": "glpi",
            "base_url": "https://glpi.example/apirest.php",
            "app_token": APP_TOKEN,
            "user_token": USER_TOKEN,
            **common,
        }
        return Harness(kind, fake, entry, "21", "22", "99")
    if kind == "osticket":
        entry = {
            "kind": "osticket",
            "base_url": "https://osticket.example",
            "api_key": OST_KEY,
            **common,
        }
        return Harness(kind, FakeOsTicket(), entry, "41", "42", "99")
    if kind == "osticket-api":  # osTicket 1.18 with the "API Endpoints" plugin
        fake = FakeOsTicket(plugin=True)
        fake.add("41", subject="Printer on fire", status="Open", staff="tom")
        fake.add("42", subject="old", status="Closed", staff=None)
        entry = {
            "kind": "osticket",
            "api": "api-endpoints",
            "base_url": "https://osticket.example",
            "api_key": OST_KEY,
            **common,
        }
        return Harness(kind, fake, entry, "41", "42", "99")
    if kind == "jira":
        fake = FakeJira()
        fake.add("HD-51", summary="Printer on fire", status="Waiting for support", category="new")
        fake.add("HD-52", summary="old", status="Resolved", category="done")
        entry = {
            "kind": "jira",
            "base_url": "https://acme.atlassian.net",
            "email": EMAIL,
            "api_token": API_TOKEN,
            **common,
        }
        return Harness(kind, fake, entry, "HD-51", "HD-52", "HD-99")
    if kind == "freshdesk":
        fake = FakeFreshdesk()
        fake.add(61, subject="Printer on fire", status=2)
        fake.add(62, subject="old", status=5)
        entry = {
            "kind": "freshdesk",
            "base_url": "https://acme.freshdesk.com",
            "api_key": FD_KEY,
            **common,
        }
        return Harness(kind, fake, entry, "61", "62", "99")
    raise AssertionError(kind)
