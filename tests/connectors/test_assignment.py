"""Assignment gate: with ``require_assignee`` a ticket must be the technician's in person or,
with ``accept_group``, assigned to nobody in person and to one of their groups (the help
desk's group name or id translated through ``group_map``). Unit cases on the rule, then
through HTTP against the fake GLPI (assigned group from ``Ticket/:id/Group_Ticket``), on
SQLite and PostgreSQL, with the refusal audited as ``ticket_not_assigned``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from broker.connectors import registry as registry_mod
from broker.connectors.base import TicketInfo
from broker.connectors.service import check_assignment
from broker.connectors.settings import ConnectorConfig
from broker.errors import PolicyDenied
from tests.connectors.fakes.glpi import FakeGlpi
from tests.connectors.harness import Harness, harness
from tests.factories import Desk, audit_events, make_desk, request_session

ME = ["tom", "Tom Tech", "tom@example.test"]


def ticket(assignee: str | None, group: str | None) -> TicketInfo:
    return TicketInfo(system="desk", external_id="1", assignee=assignee, group=group)


def config(**values: Any) -> ConnectorConfig:
    return ConnectorConfig(kind="x", require_assignee=True, **values)


def test_assigned_in_person_any_name_any_case() -> None:
    check_assignment(ticket("TOM@example.test", None), config(), ME)
    check_assignment(ticket(" Tom Tech ", "Elsewhere"), config(), ME)


def test_not_mine_is_refused_naming_the_assignee() -> None:
    with pytest.raises(PolicyDenied, match="assigned to anna, not to you"):
        check_assignment(ticket("anna", None), config(), ME)
    with pytest.raises(PolicyDenied, match="assigned to nobody"):
        check_assignment(ticket(None, None), config(), ME)


def test_group_counts_only_when_accepted_and_nobody_holds_it() -> None:
    mine = ["Second Level"]
    with pytest.raises(PolicyDenied):  # accept_group off: a group is not enough
        check_assignment(ticket(None, "Second Level"), config(), ME, mine)
    accepting = config(accept_group=True)
    check_assignment(ticket(None, "second level"), accepting, ME, mine)
    with pytest.raises(PolicyDenied, match="not one of yours"):
        check_assignment(ticket(None, "First Level"), accepting, ME, mine)
    with pytest.raises(PolicyDenied, match="assigned to anna"):  # a colleague holds it
        check_assignment(ticket("anna", "Second Level"), accepting, ME, mine)


def test_group_map_translates_the_desks_ids() -> None:
    mapped = config(accept_group=True, group_map={"6000192811": "Second Level"})
    check_assignment(ticket(None, "6000192811"), mapped, ME, ["Second Level"])
    with pytest.raises(PolicyDenied):
        check_assignment(ticket(None, "6000192811"), mapped, ME, ["First Level"])


@pytest.fixture
async def desk(app: Any) -> Desk:
    return await make_desk(app, name="level-two-operators")


@pytest.fixture
async def glpi(desk: Desk) -> AsyncIterator[Harness]:
    h = harness("glpi")
    fake = h.fake
    assert isinstance(fake, FakeGlpi)
    fake.add(31, title="Laptop slow", status=2, group="Level 2")  # no one in person
    fake.add(32, title="VPN down", status=2, group="Network")
    fake.add(33, title="Mouse", status=2, tech=desk.tech.username, group="Network")
    h.entry.update(
        require_assignee=True,
        accept_group=True,
        group_map={"Level 2": desk.group.name},
    )
    registry = h.registry()
    registry_mod.install(registry)
    yield h
    registry_mod.install(None)
    await registry.aclose()


def on(external_id: str) -> dict[str, Any]:
    return {"ticket": {"system": "glpi", "external_id": external_id}}


async def test_the_gate_applies_person_then_group(
    app: Any, client: httpx.AsyncClient, desk: Desk, glpi: Harness
) -> None:
    by_group = await request_session(client, desk, **on("31"))
    assert by_group.status_code == 201, by_group.text
    in_person = await request_session(client, desk, **on("33"))
    assert in_person.status_code == 201, in_person.text

    other_group = await request_session(client, desk, **on("32"))
    assert other_group.status_code == 403, other_group.text
    assert other_group.json()["error"] == "policy_denied"
    assert "'Network'" in other_group.json()["detail"]
    colleague = await request_session(client, desk, **on("21"))  # assigned to tom
    assert colleague.status_code == 403, colleague.text
    assert "assigned to tom" in colleague.json()["detail"]

    for ref in ("glpi:32", "glpi:21"):
        events = await audit_events(app, ref)
        assert [(t, p["data"]["rule"]) for t, p in events] == [
            ("policy.denied", "ticket_not_assigned")
        ]
