"""AnyDesk provider against a fake AnyDesk API that checks the HMAC-SHA1 request signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from broker.errors import ProviderError
from broker.providers.anydesk.provider import AnyDeskProvider
from broker.providers.anydesk.settings import AnyDeskSettings
from broker.providers.anydesk.signing import authorization, content_hash
from broker.providers.base import DeviceRef, GroupPolicy, SessionSpec, Window
from tests.providers.fake_anydesk import FakeAnyDesk


def test_signature_matches_a_hand_computed_vector() -> None:
    password, ts = "s3cret-api-pw", 1700000000
    resource = "/sessions?cid=123456789&from=1700000000&to=1700003600"
    body = b""
    # Computed independently, step by step, as in AnyDesk's documentation.
    empty_sha1_b64 = base64.b64encode(hashlib.sha1(b"").digest()).decode()
    assert empty_sha1_b64 == "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
    request_string = f"GET\n{resource}\n{ts}\n{empty_sha1_b64}"
    expected_token = base64.b64encode(
        hmac.new(password.encode(), request_string.encode(), hashlib.sha1).digest()
    ).decode()
    header = authorization("42", password, "GET", resource, timestamp=ts, body=body)
    assert header == f"AD 42:1700000000:{expected_token}"
    # The same vector as a literal, so a change in the recipe cannot pass silently.
    assert header == "AD 42:1700000000:NxiroG13Q7mgCXC4OjEULV1Eh0g="


def test_signature_vector_with_a_body() -> None:
    body = b'{"comment":"zammad:HD-4711"}'
    header = authorization(
        "42", "s3cret-api-pw", "PATCH", "/sessions/4711", timestamp=1700000000, body=body
    )
    assert header == "AD 42:1700000000:lgQ4ECENirtS2uUWADs6Q6I4FTo="


def test_body_hash_covers_the_json_body() -> None:
    body = b'{"comment":"zammad:HD-4711"}'
    assert content_hash(body) == base64.b64encode(hashlib.sha1(body).digest()).decode()
    a = authorization("1", "pw", "PATCH", "/sessions/7", timestamp=1, body=body)
    b = authorization("1", "pw", "PATCH", "/sessions/7", timestamp=1, body=b"{}")
    assert a != b


@pytest.fixture
def fake() -> FakeAnyDesk:
    return FakeAnyDesk()


@pytest.fixture
async def anydesk(fake: FakeAnyDesk) -> AsyncIterator[AnyDeskProvider]:
    settings = AnyDeskSettings(
        api_url="https://v1.api.anydesk.test:8081",
        license_id=fake.license_id,
        api_password=SecretStr(fake.password),
        page_size=2,
    )
    provider = AnyDeskProvider(settings, transport=httpx.ASGITransport(app=fake.app()))
    yield provider
    await provider.aclose()


def _spec(start: datetime, minutes: int = 30) -> SessionSpec:
    return SessionSpec(
        "sess-1",
        "zammad:HD-4711",
        "Tina Tech",
        "printer",
        ("control",),
        Window(start, start + timedelta(minutes=minutes)),
    )


async def test_check_is_ok_with_good_credentials(
    anydesk: AnyDeskProvider, fake: FakeAnyDesk
) -> None:
    health = await anydesk.check()
    assert health.ok
    assert "Helpdesk Test" in health.detail
    assert fake.rejected == 0


async def test_bad_password_is_rejected_by_the_server(fake: FakeAnyDesk) -> None:
    settings = AnyDeskSettings(
        license_id=fake.license_id, api_password=SecretStr("wrong"), api_url="https://x.test"
    )
    provider = AnyDeskProvider(settings, transport=httpx.ASGITransport(app=fake.app()))
    health = await provider.check()
    await provider.aclose()
    assert not health.ok
    assert fake.rejected == 1
    assert "wrong" not in health.detail


async def test_outage_is_a_provider_error(anydesk: AnyDeskProvider, fake: FakeAnyDesk) -> None:
    fake.down = True
    now = datetime.now(UTC)
    with pytest.raises(ProviderError, match="503"):
        await anydesk.collect(DeviceRef("d", "pc", "111", "g"), Window(now, now))


async def test_launch_uri_for_the_device(anydesk: AnyDeskProvider) -> None:
    now = datetime.now(UTC)
    launch = await anydesk.prepare(
        _spec(now), DeviceRef("d", "pc", "111222333", "g"), GroupPolicy("g")
    )
    assert launch.uri == "anydesk:111222333"
    assert launch.expires_at == now + timedelta(minutes=30)


async def test_collect_pages_through_sessions_in_the_window(
    anydesk: AnyDeskProvider, fake: FakeAnyDesk
) -> None:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    t0 = int(start.timestamp())
    for i in range(5):
        fake.add_session(f"s{i}", "111", t0 + 60 * i, active=False, duration=30)
    fake.add_session("other-device", "999", t0 + 10, active=False)
    fake.add_session("too-late", "111", t0 + 7200, active=False)
    events = await anydesk.collect(
        DeviceRef("d", "pc", "111", "g"), Window(start, start + timedelta(hours=1))
    )
    assert [e.remote_id for e in events] == ["s0", "s1", "s2", "s3", "s4"]
    assert events[0].user == "tech@ad"
    assert events[0].source_address == "anydesk:987654321"
    assert events[0].duration_seconds == 30
    assert len([c for c in fake.calls if c[1] == "/sessions"]) == 3  # page size 2


async def test_annotate_and_terminate_reach_the_api(
    anydesk: AnyDeskProvider, fake: FakeAnyDesk
) -> None:
    now = datetime.now(UTC)
    fake.add_session("live", "111", int(now.timestamp()), active=True)
    (event,) = await anydesk.collect(
        DeviceRef("d", "pc", "111", "g"),
        Window(now - timedelta(minutes=1), now + timedelta(minutes=1)),
    )
    assert event.active
    await anydesk.annotate(event, "zammad:HD-4711 · supportbroker session sess-1")
    assert fake.sessions["live"]["comment"] == "zammad:HD-4711 · supportbroker session sess-1"
    assert await anydesk.terminate(event) is True
    assert fake.sessions["live"]["active"] is False


async def test_belongs_to_is_the_approved_window(
    anydesk: AnyDeskProvider, fake: FakeAnyDesk
) -> None:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    spec = _spec(start, minutes=10)
    t0 = int(start.timestamp())
    fake.add_session("inside", "111", t0 + 120, active=False)
    fake.add_session("before", "111", t0 - 3600, active=False)
    fake.add_session("after", "111", t0 + 3600, active=False)
    events = {
        e.remote_id: e
        for e in await anydesk.collect(
            DeviceRef("d", "pc", "111", "g"),
            Window(start - timedelta(hours=2), start + timedelta(hours=2)),
        )
    }
    assert anydesk.belongs_to(events["inside"], spec)
    assert not anydesk.belongs_to(events["before"], spec)
    assert not anydesk.belongs_to(events["after"], spec)


async def test_the_published_examples_are_read() -> None:
    """Sessions, clients and sysinfo as AnyDesk's docs and official module show them
    (tests/providers/fixtures/anydesk), served by the fake that checks every signature."""
    fake = FakeAnyDesk.from_fixtures()
    settings = AnyDeskSettings(
        api_url="https://v1.api.anydesk.test:8081",
        license_id=fake.license_id,
        api_password=SecretStr(fake.password),
    )
    provider = AnyDeskProvider(settings, transport=httpx.ASGITransport(app=fake.app()))
    try:
        devices = await provider.list_devices()
        assert [(d.provider_device_id, d.name, d.online) for d in devices] == [
            ("111222333", "pc-reception@ad", True),
            ("444555666", "kiosk-lobby@ad", False),
        ]
        start = datetime.fromtimestamp(1767603600, UTC)
        ended, running = await provider.collect(
            DeviceRef("d", "pc", "111222333", "g"), Window(start, start + timedelta(hours=1))
        )
        assert (ended.remote_id, ended.active, ended.duration_seconds) == ("6211030", False, 900)
        assert ended.user == "tech@ad"
        assert ended.source_address == "anydesk:987654321"
        assert ended.ended_at == datetime.fromtimestamp(1767604500, UTC)
        assert (running.remote_id, running.active, running.kind) == (
            "6211044",
            True,
            "connection.started",
        )
        assert await provider.terminate(running) is True
        assert fake.sessions["6211044"]["active"] is False
        assert fake.rejected == 0
    finally:
        await provider.aclose()
