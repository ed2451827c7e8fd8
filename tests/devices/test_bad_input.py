"""Bad input to the device-group and device APIs: 4xx ``{"error", "detail"}``, nothing written."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.devices.conftest import Caller
from tests.devices.test_devices import device_body, device_count
from tests.devices.test_groups import group_count, system_events
from tests.factories import make_group


def assert_error(response: httpx.Response, status: int | set[int]) -> dict[str, Any]:
    allowed = status if isinstance(status, set) else {status}
    assert response.status_code in allowed, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"colour": "red"}, "colour"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "blank"),
        ({"name": "x" * 101}, "name"),
        ({"name": "Fin\x00ance"}, "control characters"),
        ({"name": "Fin\u2066ance"}, "control characters"),
        ({"description": "a\nb"}, "control characters"),
        ({"unattended_allowed": "yes"}, "unattended_allowed"),
        ({"unattended_allowed": 1}, "unattended_allowed"),
        ({"record_input": "true"}, "record_input"),
        ({"consent_timeout_seconds": "300"}, "consent_timeout_seconds"),
        ({"consent_timeout_seconds": 10}, "consent_timeout_seconds"),
        ({"consent_timeout_seconds": 86401}, "consent_timeout_seconds"),
        ({"consent_timeout_seconds": 300.5}, "consent_timeout_seconds"),
        ({"allowed_ports": [0]}, "allowed_ports"),
        ({"allowed_ports": [65536]}, "allowed_ports"),
        ({"allowed_ports": ["22"]}, "allowed_ports"),
        ({"allowed_ports": [22, 22]}, "must not repeat"),
        ({"allowed_ports": list(range(1, 102))}, "allowed_ports"),
        ({"allowed_paths": "/tmp"}, "allowed_paths"),
        ({"allowed_paths": ["/tmp\x00"]}, "control characters"),
        ({"questions": [{"id": "q1"}]}, "label"),
        ({"questions": [{"id": "q 1", "label": "x"}]}, "id"),
        ({"questions": [{"id": "q1", "label": "x", "type": "text"}]}, "type"),
        ({"questions": [{"id": "q1", "label": "a\u202eb"}]}, "control characters"),
        ({"questions": [{"id": "q1", "label": "a"}, {"id": "q1", "label": "b"}]}, "repeat"),
        ({"questions": [{"id": f"q{n}", "label": "x"} for n in range(21)]}, "questions"),
        ({"questions": ["Are you there?"]}, "questions"),
    ],
)
async def test_invalid_group(
    app: Any, client: httpx.AsyncClient, admin: Caller, overrides: dict[str, Any], words: str
) -> None:
    body = {"name": "Finance", **overrides}
    error = assert_error(
        await client.post("/api/v1/device-groups", json=body, headers=admin.headers), 422
    )
    assert error["error"] == "invalid_request"
    assert words in error["detail"], error
    assert await group_count(app) == 0
    assert await system_events(app, "device_group.") == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"serial": "X1"}, "serial"),
        ({"name": 42}, "name"),
        ({"name": "pc\r\n"}, "control characters"),
        ({"name": "x" * 201}, "name"),
        ({"provider": "AnyDesk"}, "provider"),
        ({"provider": None}, "provider"),
        ({"provider_device_id": ""}, "provider_device_id"),
        ({"provider_device_id": "1\x002"}, "control characters"),
        ({"provider_device_id": "x" * 201}, "provider_device_id"),
        ({"group_id": "x" * 37}, "group_id"),
        ({"asset_tag": "x" * 101}, "asset_tag"),
        ({"owner_contact": "x" * 321}, "owner_contact"),
        ({"owner_name": "\u202eevil"}, "control characters"),
    ],
)
async def test_invalid_device(
    app: Any, client: httpx.AsyncClient, admin: Caller, overrides: dict[str, Any], words: str
) -> None:
    group = await make_group(app)
    body = {**device_body(group.id), **overrides}
    error = assert_error(
        await client.post("/api/v1/devices", json=body, headers=admin.headers), 422
    )
    assert words in error["detail"], error
    assert await device_count(app) == 0
    assert await system_events(app, "device.") == []


@pytest.mark.parametrize("url", ["/api/v1/devices", "/api/v1/device-groups"])
async def test_malformed_and_oversized(
    app: Any, client: httpx.AsyncClient, admin: Caller, url: str
) -> None:
    headers = {**admin.headers, "content-type": "application/json"}
    for raw in (b'{"name": ', b"\xff\xfe", b"[]", b"", b'"text"'):
        assert_error(await client.post(url, content=raw, headers=headers), {400, 422})
    huge = json.dumps({"name": "x" * 2_000_000}).encode()
    assert_error(await client.post(url, content=huge, headers=headers), 413)
    assert await device_count(app) == 0
    assert await group_count(app) == 0


async def test_bad_queries_and_ids(client: httpx.AsyncClient, admin: Caller) -> None:
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"provider": "Any Desk"}):
        assert_error(await client.get("/api/v1/devices", params=params, headers=admin.headers), 422)
    long_id = "x" * 37
    assert_error(await client.get(f"/api/v1/devices/{long_id}", headers=admin.headers), 422)
    assert_error(await client.get(f"/api/v1/device-groups/{long_id}", headers=admin.headers), 422)
