"""The MeshCentral provider when things go wrong, against the real MeshCentral 1.1.55.

A lost or late reply to ``createDeviceShareLink`` must neither leave a second share nor lose
the one that was made; a failed ticket note must not leave a share behind for a session the
broker then fails; concurrent requests on one connection each get their own reply; an outside
connection (the local relay, as the admin, not through any share) is read back from the relay
log as MeshCentral wrote it.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from broker.errors import ProviderError
from broker.providers.base import DeviceRef, GroupPolicy, SessionSpec, Window
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.client import (
    ConnectionLostError,
    MeshControl,
    RequestTimeoutError,
)
from broker.providers.meshcentral.provider import MeshCentralProvider, session_tag
from broker.providers.meshcentral.settings import MeshCentralSettings
from tests.providers import meshcentral_server as mc
from tests.providers.conftest import mc_settings


class FlakyControl(MeshControl):
    """The real control channel with one injected failure (``fail``), then back to normal."""

    def __init__(self, settings: MeshCentralSettings, fail: str, *, sent: bool = True) -> None:
        super().__init__(settings)
        self.fail: str | None = fail
        self.sent = sent  # whether the failed command reached MeshCentral first
        self.creates = 0

    async def request(self, command: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if command.get("action") == "createDeviceShareLink":
            self.creates += 1
            if self.fail in ("lost", "timeout"):
                kind, self.fail = self.fail, None
                if self.sent:
                    await super().request(command, **kwargs)  # MeshCentral makes the share...
                    if kind == "lost":
                        assert self._ws is not None
                        await self._ws.close()  # ...and its reply never reaches us
                error = ConnectionLostError if kind == "lost" else RequestTimeoutError
                raise error(f"simulated: {kind}")
        return await super().request(command, **kwargs)

    async def send(self, command: dict[str, Any]) -> None:
        if command.get("action") == "setDeviceEvent" and self.fail == "note":
            self.fail = None
            assert self._ws is not None
            await self._ws.close()
            raise ConnectionLostError("simulated: connection lost sending setDeviceEvent")
        await super().send(command)


def _spec() -> SessionSpec:
    now = datetime.now(UTC).replace(microsecond=0)
    return SessionSpec(
        secrets.token_hex(8),
        "zammad:HD-9",
        "Tina Tech",
        "why",
        ("view", "control"),
        Window(now, now + timedelta(minutes=20)),
    )


async def _flaky(server: mc.MeshServer, fail: str, *, sent: bool = True) -> MeshCentralProvider:
    settings = mc_settings(server)
    return MeshCentralProvider(settings, control=FlakyControl(settings, fail, sent=sent))


async def _device(provider: MeshCentralProvider) -> DeviceRef:
    meshid = await admin.create_group(provider.control, f"rs-{secrets.token_hex(3)}")
    nodeid = await admin.add_local_device(provider.control, meshid, "pc", "127.0.0.1")
    return DeviceRef("d", "pc", nodeid, "g")


async def _tagged(provider: MeshCentralProvider, device: DeviceRef, spec: SessionSpec) -> list[Any]:
    shares = await provider.shares(device.provider_device_id)
    return [s for s in shares if session_tag(spec.session_id) in s["guestName"]]


@pytest.mark.parametrize(
    ("fail", "sent"), [("lost", True), ("timeout", True), ("lost", False)], ids=str
)
async def test_a_lost_share_reply_is_recovered_without_a_second_share(
    meshcentral: mc.MeshServer, fail: str, sent: bool
) -> None:
    provider = await _flaky(meshcentral, fail, sent=sent)
    try:
        device = await _device(provider)
        spec = _spec()
        launch = await provider.prepare(spec, device, GroupPolicy("g"))
        (share,) = await _tagged(provider, device, spec)  # exactly one, whatever happened
        assert share["publicid"] == launch.handle
        assert share["p"] == 2
        # Sent again only when MeshCentral had not made it.
        control = provider.control
        assert isinstance(control, FlakyControl)
        assert control.creates == (1 if sent else 2)
        assert launch.url is not None
        async with httpx.AsyncClient() as client:
            assert (await client.get(launch.url)).status_code == 200
        await provider.end(spec, device, launch.handle)
        assert await _tagged(provider, device, spec) == []
    finally:
        await provider.aclose()


async def test_a_failed_ticket_note_withdraws_the_share(meshcentral: mc.MeshServer) -> None:
    provider = await _flaky(meshcentral, "note")
    try:
        device = await _device(provider)
        spec = _spec()
        with pytest.raises(ProviderError) as failed:
            await provider.prepare(spec, device, GroupPolicy("g"))
        assert "could not record the ticket reference" in failed.value.detail
        assert "the share was removed (1 share(s))" in failed.value.detail
        assert await _tagged(provider, device, spec) == []
    finally:
        await provider.aclose()


async def test_end_also_removes_a_stray_share_of_the_session(mesh: MeshCentralProvider) -> None:
    device = await _device(mesh)
    spec = _spec()
    launch = await mesh.prepare(spec, device, GroupPolicy("g"))
    # A second share with the session's tag (say, made by a retry the broker never heard of).
    await mesh.prepare(spec, device, GroupPolicy("g"))
    assert len(await _tagged(mesh, device, spec)) == 2
    await mesh.end(spec, device, launch.handle)
    assert await _tagged(mesh, device, spec) == []


async def test_concurrent_requests_each_get_their_own_reply(mesh: MeshCentralProvider) -> None:
    device = await _device(mesh)
    nodeid = device.provider_device_id
    await mesh.note(nodeid, "HD-1 note")
    meshes, nodes, events, shares, pong = await asyncio.gather(
        mesh.meshes(),
        mesh.nodes(),
        mesh.events(nodeid),
        mesh.shares(nodeid),
        mesh.control.request({"action": "ping"}, reply_action="pong"),
    )
    assert any(m["_id"] for m in meshes)
    assert any(n["_id"] == nodeid for group in nodes.values() for n in group)
    assert isinstance(events, list)
    assert shares == []
    assert pong["action"] == "pong"


async def test_an_outside_connection_is_read_from_the_relay_log(
    mesh: MeshCentralProvider, meshcentral: mc.MeshServer
) -> None:
    device = await _device(mesh)
    before = datetime.now(UTC) - timedelta(seconds=5)
    await mc.local_relay(meshcentral, device.provider_device_id)
    window = Window(before, datetime.now(UTC) + timedelta(minutes=1))
    for _ in range(50):  # MeshCentral stores the end record as the relay closes
        events = await mesh.collect(device, window)
        if len(events) == 2:
            break
        await asyncio.sleep(0.1)
    started, ended = events
    assert (started.kind, ended.kind) == ("connection.started", "connection.ended")
    assert started.remote_id == ended.remote_id
    assert started.user == ended.user == "Admin"
    assert (started.protocol, started.target_address) == ("tcp", "127.0.0.1")
    assert started.source_address is None  # a local relay names the protocol, not an address
    assert ended.duration_seconds is not None
    assert started.key != ended.key
    assert not mesh.belongs_to(started, _spec())  # no share of ours was used
