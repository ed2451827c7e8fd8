"""Against a real MeshCentral 1.1.55: groups, agentless devices, share links, device events."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from broker.errors import ProviderError
from broker.providers.base import DeviceRef, GroupPolicy, SessionSpec, Window
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.provider import MeshCentralProvider
from tests.providers import meshcentral_server as mc
from tests.providers.conftest import mc_settings


async def _device(mesh: MeshCentralProvider) -> tuple[str, str]:
    meshid = await admin.create_group(mesh.control, f"it-{secrets.token_hex(3)}")
    nodeid = await admin.add_local_device(
        mesh.control, meshid, f"pc-{secrets.token_hex(3)}", "10.0.0.5"
    )
    return meshid, nodeid


def _spec(caps: tuple[str, ...] = ("view", "control"), minutes: int = 30) -> SessionSpec:
    now = datetime.now(UTC).replace(microsecond=0)
    return SessionSpec(
        session_id=secrets.token_hex(8),
        ticket_ref="zammad:HD-4711",
        technician="Tina Tech",
        reason="printer driver 100% broken",
        capabilities=caps,
        window=Window(now, now + timedelta(minutes=minutes)),
    )


async def test_check_reports_connected(mesh: MeshCentralProvider) -> None:
    health = await mesh.check()
    assert health.ok, health.detail
    assert health.facts["user"].lower() == "admin"


async def test_wrong_login_key_is_refused(meshcentral: mc.MeshServer) -> None:
    provider = MeshCentralProvider(
        mc_settings(meshcentral, login_key=SecretStr("ab" * 80), connect_timeout=1.5)
    )
    health = await provider.check()
    await provider.aclose()
    assert not health.ok
    assert "ab" * 40 not in health.detail
    with pytest.raises(ProviderError):
        await provider.meshes()
    await provider.aclose()


async def test_password_login_works(meshcentral: mc.MeshServer) -> None:
    provider = MeshCentralProvider(
        mc_settings(meshcentral, login_key=None, password=SecretStr(mc.ADMIN_PASSWORD))
    )
    try:
        assert (await provider.check()).ok
    finally:
        await provider.aclose()


async def test_group_and_agentless_device_are_listed(mesh: MeshCentralProvider) -> None:
    meshid, nodeid = await _device(mesh)
    devices = {d.provider_device_id: d for d in await mesh.list_devices()}
    assert nodeid in devices
    group = next(m for m in await mesh.meshes() if m["_id"] == meshid)
    assert devices[nodeid].group_name == group["name"]


async def test_share_link_has_exact_rights_window_and_consent(
    mesh: MeshCentralProvider, meshcentral: mc.MeshServer
) -> None:
    _, nodeid = await _device(mesh)
    spec = _spec(("view", "shell"))
    device = DeviceRef("d1", "pc", nodeid, "Front desk")
    launch = await mesh.prepare(spec, device, GroupPolicy("Front desk"))
    shares = await mesh.shares(nodeid)
    (share,) = [s for s in shares if s["publicid"] == launch.handle]
    assert share["p"] == 1 | 2  # terminal + desktop, no files
    assert share["viewOnly"] is True  # view without control
    assert share["consent"] == 64 | 1 | 2 | 8 | 16  # toolbar, notify + prompt for both
    assert share["startTime"] == int(spec.window.start.timestamp()) * 1000
    assert share["expireTime"] == int(spec.window.end.timestamp()) * 1000
    assert f"[sb-{spec.session_id}]" in share["guestName"]
    # The link is usable: MeshCentral serves the sharing page for it on the technician's base.
    assert launch.url is not None
    assert launch.url.startswith(f"{meshcentral.url}/sharing?c=")
    async with httpx.AsyncClient() as client:
        response = await client.get(launch.url)
    assert response.status_code == 200

    await mesh.end(spec, device, launch.handle)
    assert [s for s in await mesh.shares(nodeid) if s["publicid"] == launch.handle] == []
    # Ending twice is harmless (revoke after end, retries).
    assert await mesh.remove_share(nodeid, str(launch.handle)) is False


async def test_notify_only_groups_get_no_prompt_bits(meshcentral: mc.MeshServer) -> None:
    provider = MeshCentralProvider(mc_settings(meshcentral, consent_by_group={"Kiosks": "notify"}))
    try:
        _, nodeid = await _device(provider)
        launch = await provider.prepare(
            _spec(("control", "files")),
            DeviceRef("d", "k", nodeid, "Kiosks"),
            GroupPolicy("Kiosks"),
        )
        (share,) = [s for s in await provider.shares(nodeid) if s["publicid"] == launch.handle]
        assert share["p"] == 2 | 4
        assert share["consent"] == 64 | 1 | 4
        assert "viewOnly" not in share
    finally:
        await provider.aclose()


async def test_device_event_with_percent_is_written_and_read_back(
    mesh: MeshCentralProvider, meshcentral: mc.MeshServer
) -> None:
    _, nodeid = await _device(mesh)
    text = "HD-4711: disk 100% full; 50%off %zz %% done"
    await mesh.note(nodeid, text)
    for _ in range(50):
        events = await mesh.events(nodeid)
        if any(e.get("msg") == text for e in events):
            break
    else:
        pytest.fail(f"device event not found; got {[e.get('msg') for e in events]}")
    assert meshcentral.process is not None
    assert meshcentral.process.poll() is None
    assert (await mesh.check()).ok  # the server survived the %


async def test_prepare_writes_ticket_reference_into_device_log(mesh: MeshCentralProvider) -> None:
    _, nodeid = await _device(mesh)
    spec = _spec()
    await mesh.prepare(spec, DeviceRef("d", "pc", nodeid, "g"), GroupPolicy("g"))
    events = await mesh.events(nodeid)
    notes = [e["msg"] for e in events if e.get("action") == "manual"]
    assert any("zammad:HD-4711" in n and spec.session_id in n and "100%" in n for n in notes)


async def test_collect_on_a_quiet_device_is_empty(mesh: MeshCentralProvider) -> None:
    _, nodeid = await _device(mesh)
    now = datetime.now(UTC)
    events = await mesh.collect(
        DeviceRef("d", "pc", nodeid, "g"),
        Window(now - timedelta(hours=1), now + timedelta(hours=1)),
    )
    assert events == []


async def test_client_reconnects_after_the_connection_drops(mesh: MeshCentralProvider) -> None:
    await mesh.meshes()
    ws = mesh.control._ws
    assert ws is not None
    await ws.close()
    assert isinstance(await mesh.meshes(), list)  # re-opened transparently
    assert mesh.control._ws is not ws


async def test_unknown_device_is_a_provider_error(mesh: MeshCentralProvider) -> None:
    with pytest.raises(ProviderError):
        await mesh.prepare(
            _spec(), DeviceRef("d", "pc", "node//" + "A" * 64, "g"), GroupPolicy("g")
        )
