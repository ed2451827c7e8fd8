"""System-specific behaviour on top of the contract: auth schemes, mapping, state words,
GLPI's session lifecycle, Freshdesk's HTML notes, and the settings/registry plumbing.

Each system runs against a fake in ``tests/connectors/fakes/`` that implements the request
and response shapes of its published API and refuses anything else (wrong auth 401, wrong
body 400/422). The shapes were checked against these pages:

- Zammad: https://docs.zammad.org/en/latest/api/intro.html (``Token token=``),
  https://docs.zammad.org/en/latest/api/ticket/index.html (show, ``expand=true``),
  https://docs.zammad.org/en/latest/api/ticket/articles.html (``type: note``, ``internal``).
- GLPI: https://github.com/glpi-project/glpi/blob/main/apirest.md ("Init session",
  "Kill session", "Get an item", "Get sub items", "Add item(s)"; ``ITILFollowup`` input),
  also https://help.glpi-project.org/documentation/modules/configuration/general/api/api.
- osTicket: https://docs.osticket.com/en/latest/Developer%20Documentation/API%20Docs.html
  and .../API/Tickets.html (``X-API-Key``; create only, no read, no notes).
- Jira Service Management: https://developer.atlassian.com/cloud/jira/platform/rest/v2/
  api-group-issues/ (get issue, ``statusCategory``) and https://developer.atlassian.com/
  cloud/jira/service-desk/rest/api-group-request/ (create request comment, ``public: false``).
- Freshdesk: https://developers.freshdesk.com/api/#authentication,
  https://developers.freshdesk.com/api/#view_a_ticket (status 2-5, ``include=requester``),
  https://developers.freshdesk.com/api/#add_note_to_a_ticket (``private: true``, HTML body).
- Generic webhook: our own format, docs/CONNECTORS.md (signed as broker/connectors/signing.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.connectors import registry as registry_mod
from broker.connectors.registry import ConnectorRegistry, available
from broker.connectors.settings import ConnectorsSettings
from broker.errors import ConnectorError
from tests.connectors.fakes.glpi import FakeGlpi
from tests.connectors.harness import BROKER_URL, harness


async def test_glpi_opens_and_kills_a_session_per_operation() -> None:
    h = harness("glpi")
    connector = h.registry().get("glpi")
    info = await connector.lookup_ticket(h.open_id)
    await connector.post_comment(h.open_id, "note")
    fake = h.fake
    assert isinstance(fake, FakeGlpi)
    assert len(fake.killed) == 2
    assert fake.sessions == set()
    assert info.requester == "post-only"
    assert info.assignee == "tom"
    assert info.raw_state == "processing (assigned)"
    assert info.url == "https://glpi.example/front/ticket.form.php?id=21"
    assert info.category == "Hardware > Laptop"
    assert info.group is None  # only an observer group (type 3): not the ticket's group
    fake.add(24, title="grouped", status=1, group="Level 2")
    assert (await connector.lookup_ticket("24")).group == "Level 2"


async def test_glpi_solved_counts_as_closed() -> None:
    h = harness("glpi")
    h.fake.add(23, title="done", status=5)  # type: ignore[attr-defined]
    assert (await h.registry().get("glpi").lookup_ticket("23")).state == "closed"


async def test_zammad_fields_and_unassigned_owner() -> None:
    h = harness("zammad")
    h.fake.add(13, title="pending", state="pending close")  # type: ignore[attr-defined]
    connector = h.registry().get("zammad")
    info = await connector.lookup_ticket("13")
    assert info.is_open
    assert info.raw_state == "pending close"
    assert info.assignee is None  # Zammad's "-" owner
    assert info.requester == "nicole.braun@zammad.org"
    assert (await connector.lookup_ticket("11")).assignee == "tom"
    assert info.url == "https://desk.example/#ticket/zoom/13"


async def test_zammad_wrong_token_is_a_connector_error() -> None:
    h = harness("zammad")
    h.entry["token"] = "wrong"
    with pytest.raises(ConnectorError, match="HTTP 401"):
        await h.registry().get("zammad").lookup_ticket(h.open_id)


async def test_field_mapping_and_closed_states_are_configurable() -> None:
    h = harness("zammad")
    h.entry["fields"] = {"category": "group", "assignee": "customer"}
    h.entry["closed_states"] = ["open"]  # an odd desk where "open" means done
    info = await h.registry().get("zammad").lookup_ticket(h.open_id)
    assert info.category == "Users"
    assert info.assignee == "nicole.braun@zammad.org"
    assert info.state == "closed"


async def test_jira_uses_status_category_and_internal_comment() -> None:
    h = harness("jira")
    connector = h.registry().get("jira")
    info = await connector.lookup_ticket("hd-51")  # keys are case-insensitive
    assert info.is_open
    assert info.raw_state == "Waiting for support"
    assert info.assignee == "Tom Tech"
    assert info.requester == "Erika Mustermann"
    assert info.url == "https://acme.atlassian.net/browse/HD-51"
    await connector.post_comment("HD-51", "hello", internal=True)
    assert h.fake.notes == [{"ticket": "HD-51", "text": "hello", "internal": True}]


async def test_freshdesk_note_is_escaped_html() -> None:
    h = harness("freshdesk")
    connector = h.registry().get("freshdesk")
    await connector.post_comment(h.open_id, "a <b>\nline two")
    assert h.fake.notes[0]["text"] == "a &lt;b&gt;<br>line two"
    info = await connector.lookup_ticket(h.open_id)
    assert info.requester == "Erika Mustermann"
    assert info.priority == "high"


async def test_osticket_check_uses_the_key() -> None:
    h = harness("osticket")
    assert await h.registry().get("osticket").check() == "ok"
    h.entry["api_key"] = "wrong"
    with pytest.raises(ConnectorError):
        await h.registry().get("osticket").check()


def test_settings_from_env_json_and_toml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "connectors.toml"
    toml.write_text(
        '[glpi]\nkind = "glpi"\nbase_url = "https://g"\napp_token = "a"\n'
        'user_token = "u"\n\n[zammad]\nkind = "zammad"\ntoken = "file"\n'
    )
    env = {"zammad": {"kind": "zammad", "base_url": "https://z", "token": "env"}}
    monkeypatch.setenv("SUPPORTBROKER_CONNECTORS", json.dumps(env))
    monkeypatch.setenv("SUPPORTBROKER_CONNECTORS_FILE", str(toml))
    entries = ConnectorsSettings().entries()
    assert entries["zammad"]["token"] == "env"  # the environment wins per system
    registry = ConnectorRegistry(entries, broker_url=BROKER_URL)
    assert registry.systems() == ["glpi", "zammad"]
    assert registry.get("glpi").kind == "glpi"
    assert registry.get("elsewhere").kind == "null"  # unconfigured: standalone


def test_misconfiguration_names_the_field_not_the_secret() -> None:
    with pytest.raises(ConnectorError) as caught:
        ConnectorRegistry(
            {"z": {"kind": "zammad", "token": "s3cr3t-value", "bogus": 1}}, broker_url=BROKER_URL
        )
    assert "bogus" in caught.value.detail
    assert "s3cr3t-value" not in caught.value.detail
    with pytest.raises(ConnectorError, match="unknown connector kind"):
        ConnectorRegistry({"x": {"kind": "nope"}}, broker_url=BROKER_URL)


def test_secrets_are_not_in_reprs() -> None:
    registry = harness("zammad").registry()
    connector = registry.get("zammad")
    assert "zammad-token-123" not in repr(connector.config)  # type: ignore[attr-defined]


def test_builtins_are_available_and_entry_points_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert set(available()) >= {
        "null",
        "webhook",
        "zammad",
        "glpi",
        "osticket",
        "jira",
        "freshdesk",
    }

    class EP:
        name = "zammad"
        value = "tests.connectors.test_systems:CustomZammad"

    monkeypatch.setattr(registry_mod, "entry_points", lambda group: [EP()])
    assert available()["zammad"] == "tests.connectors.test_systems:CustomZammad"
