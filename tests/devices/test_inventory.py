"""The inventory's list: search, group/provider/online filters, paging, retiring (API)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.devices.conftest import Caller
from tests.devices.test_groups import system_events
from tests.factories import make_desk, make_device, make_group, session_body

API = "/api/v1/devices"


async def test_search_filters_and_paging(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    finance = await make_group(app, name="Finance")
    lab = await make_group(app, name="Lab")
    for n in range(5):
        await make_device(app, finance, name=f"FIN-LT-{n:03d}", provider="anydesk")
    await make_device(app, lab, name="LAB-PC-1", provider="agent", asset_tag="INV-9")

    page = await client.get(API, params={"limit": 2, "offset": 2}, headers=admin.headers)
    body = page.json()
    assert body["total"] == 6
    assert [d["name"] for d in body["items"]] == ["FIN-LT-002", "FIN-LT-003"]
    assert all(d["online"] is False for d in body["items"])  # no agent link: offline

    by_tag = await client.get(API, params={"q": "inv-9"}, headers=admin.headers)
    assert [d["name"] for d in by_tag.json()["items"]] == ["LAB-PC-1"]
    by_group = await client.get(API, params={"group_id": lab.id}, headers=admin.headers)
    assert by_group.json()["total"] == 1
    by_provider = await client.get(API, params={"provider": "anydesk"}, headers=admin.headers)
    assert by_provider.json()["total"] == 5
    nobody_online = await client.get(API, params={"online": "true"}, headers=admin.headers)
    assert nobody_online.json()["total"] == 0
    bad = await client.get(API, params={"online": "perhaps"}, headers=admin.headers)
    assert bad.status_code == 422
    assert set(bad.json()) >= {"error", "detail"}


async def test_retired_device_is_kept_hidden_and_refused(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    desk = await make_desk(app)
    retired = await client.post(f"{API}/{desk.device.id}/retire", headers=admin.headers)
    assert retired.status_code == 200, retired.text
    assert retired.json()["retired_at"] is not None
    twice = await client.post(f"{API}/{desk.device.id}/retire", headers=admin.headers)
    assert twice.status_code == 409
    [(event, payload)] = [
        e for e in await system_events(app, "device.") if e[0] != "device.created"
    ]
    assert event == "device.retired"
    assert payload["data"]["device_id"] == desk.device.id

    technician = {"Authorization": f"Bearer {desk.token}"}
    listed = await client.get(API, headers=technician)
    assert listed.json()["total"] == 0
    refused = await client.post(
        "/api/v1/sessions", json=session_body(desk.device), headers=technician
    )
    assert refused.status_code == 403, refused.text
    assert "retired" in refused.json()["detail"]
