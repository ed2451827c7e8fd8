"""One contract for every provider: null, AnyDesk (fake API) and MeshCentral (real server)."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from pydantic import SecretStr

from broker.errors import ProviderError
from broker.providers import cli, registry
from broker.providers.anydesk.provider import AnyDeskProvider
from broker.providers.anydesk.settings import AnyDeskSettings
from broker.providers.base import (
    DeviceRef,
    GroupPolicy,
    RemoteAccessProvider,
    SessionSpec,
    Window,
)
from broker.providers.meshcentral import admin
from broker.providers.meshcentral.cookie import mint_login_cookie, open_login_cookie
from broker.providers.meshcentral.provider import MeshCentralProvider
from broker.providers.null import NullProvider
from tests.providers import meshcentral_server as mc
from tests.providers.conftest import mc_settings
from tests.providers.fake_anydesk import FakeAnyDesk


@pytest.fixture(params=["null", "anydesk", "meshcentral"])
async def provider_and_device(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[RemoteAccessProvider, DeviceRef]]:
    if request.param == "null":
        yield NullProvider(), DeviceRef("d", "pc", "x", "g")
        return
    if request.param == "anydesk":
        fake = FakeAnyDesk()
        settings = AnyDeskSettings(
            license_id=fake.license_id, api_password=SecretStr(fake.password)
        )
        ad = AnyDeskProvider(settings, transport=httpx.ASGITransport(app=fake.app()))
        yield ad, DeviceRef("d", "pc", "123123123", "g")
        await ad.aclose()
        return
    server: mc.MeshServer = request.getfixturevalue("meshcentral")
    mesh = MeshCentralProvider(mc_settings(server))
    meshid = await admin.create_group(mesh.control, f"contract-{secrets.token_hex(3)}")
    nodeid = await admin.add_local_device(mesh.control, meshid, "pc", "10.9.9.9")
    yield mesh, DeviceRef("d", "pc", nodeid, "g")
    await mesh.aclose()


async def test_provider_contract(
    provider_and_device: tuple[RemoteAccessProvider, DeviceRef],
) -> None:
    provider, device = provider_and_device
    assert isinstance(provider, RemoteAccessProvider)
    assert (await provider.check()).ok
    now = datetime.now(UTC).replace(microsecond=0)
    spec = SessionSpec(
        secrets.token_hex(6),
        "t:1",
        "Tech",
        "why",
        ("view",),
        Window(now, now + timedelta(minutes=5)),
    )
    launch = await provider.prepare(spec, device, GroupPolicy("g"))
    assert launch.provider == provider.name
    assert launch.expires_at == spec.window.end
    await provider.end(spec, device, launch.handle)
    await provider.end(spec, device, launch.handle)  # idempotent
    events = await provider.collect(device, Window(now - timedelta(hours=1), now))
    assert isinstance(events, list)


def test_login_cookie_is_aes_gcm_and_fresh() -> None:
    key = bytes(range(80))
    cookie = mint_login_cookie(key, "Admin", now=1_700_000_000)
    assert "+" not in cookie
    assert "/" not in cookie
    assert open_login_cookie(key, cookie) == {
        "userid": "user//admin",
        "domainid": "",
        "time": 1_700_000_000,
    }
    with pytest.raises(InvalidTag):  # a cookie under another key fails authentication
        open_login_cookie(bytes(80), cookie)


async def test_a_command_without_reply_times_out(meshcentral: mc.MeshServer) -> None:
    mesh = MeshCentralProvider(mc_settings(meshcentral))
    try:
        with pytest.raises(ProviderError, match="did not answer"):
            await mesh.control.request(
                {"action": "no-such-command"}, reply_action="never", wait_seconds=0.3
            )
        assert (await mesh.check()).ok  # the connection is still usable afterwards
    finally:
        await mesh.aclose()


async def test_cli_check(capsys: pytest.CaptureFixture[str], meshcentral: mc.MeshServer) -> None:
    registry.install("meshcentral", MeshCentralProvider(mc_settings(meshcentral)))
    assert await cli._check(None, argparse.Namespace(name="meshcentral")) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "meshcentral: ok: connected" in out
    assert meshcentral.login_key_hex not in out
    bad = MeshCentralProvider(mc_settings(meshcentral, url="http://127.0.0.1:1"))
    registry.install("meshcentral", bad)
    assert await cli._check(None, argparse.Namespace(name="meshcentral")) == 1  # type: ignore[arg-type]
    assert "not reachable" in capsys.readouterr().out


def test_cli_registers_provider_check() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["provider", "check", "meshcentral"])
    assert args.handler is cli._check
    assert args.name == "meshcentral"
