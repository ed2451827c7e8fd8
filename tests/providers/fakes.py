"""An in-memory provider for service tests: records calls, fails on demand, replays events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from broker.errors import ProviderError
from broker.providers.base import (
    CAPABILITIES,
    DeviceRef,
    GroupPolicy,
    Launch,
    Offer,
    ProviderEvent,
    ProviderHealth,
    RemoteDevice,
    SessionSpec,
    Window,
)


@dataclass
class FakeProvider:
    name: str = "fake"
    down: bool = False
    devices: list[RemoteDevice] = field(default_factory=list)
    events: list[ProviderEvent] = field(default_factory=list)
    prepared: list[str] = field(default_factory=list)
    ended: list[str | None] = field(default_factory=list)
    annotated: dict[str, str] = field(default_factory=dict)
    terminated: list[str] = field(default_factory=list)
    terminal: str | None = None
    port: int | None = None
    offers: Offer = field(default_factory=lambda: Offer(frozenset(CAPABILITIES)))
    device_sweep: bool = True  # its devices are swept for outside connections

    def _maybe_fail(self) -> None:
        if self.down:
            raise ProviderError("fake provider is down")

    async def check(self) -> ProviderHealth:
        return ProviderHealth(self.name, ok=not self.down, detail="fake")

    async def list_devices(self) -> list[RemoteDevice]:
        self._maybe_fail()
        return list(self.devices)

    async def prepare(self, session: SessionSpec, device: DeviceRef, policy: GroupPolicy) -> Launch:
        self._maybe_fail()
        self.prepared.append(session.session_id)
        return Launch(
            provider=self.name,
            handle=f"share-{session.session_id}",
            expires_at=session.window.end,
            url=f"https://fake.test/share/{session.session_id}?secret=bearer",
            terminal=self.terminal,
            port=self.port,
            details={"group": policy.group_name},
        )

    async def end(self, session: SessionSpec, device: DeviceRef, handle: str | None) -> None:
        self._maybe_fail()
        self.ended.append(handle)

    async def collect(self, device: DeviceRef, window: Window) -> list[ProviderEvent]:
        self._maybe_fail()
        return [
            e
            for e in self.events
            if e.provider_device_id == device.provider_device_id and window.contains(e.at)
        ]

    def belongs_to(self, event: ProviderEvent, session: SessionSpec) -> bool:
        return event.guest_name == f"sb-{session.session_id}"

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        self.annotated[event.key] = text

    async def terminate(self, event: ProviderEvent) -> bool:
        self.terminated.append(event.key)
        return True

    async def aclose(self) -> None:
        return None


def connection(
    key: str,
    device: str,
    at_offset: timedelta,
    base: object,
    *,
    session_id: str | None,
    active: bool = False,
) -> ProviderEvent:
    from datetime import datetime

    assert isinstance(base, datetime)
    return ProviderEvent(
        provider="fake",
        key=key,
        provider_device_id=device,
        kind="connection",
        at=base + at_offset,
        user="tina",
        guest_name=f"sb-{session_id}" if session_id else None,
        source_address="203.0.113.7",
        active=active,
    )
