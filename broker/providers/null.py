"""The null provider: approves nothing remotely, records nothing; for tests and set-ups
without a remote-access tool (the session still runs through consent and the audit log)."""

from __future__ import annotations

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


class NullProvider:
    name = "null"
    # Gives nothing for real, so it can stand in for any tool; records nothing itself.
    offers = Offer(frozenset(CAPABILITIES))

    def __init__(self) -> None:
        self.ended: list[str] = []

    @classmethod
    def from_env(cls) -> NullProvider:
        return cls()  # nothing to configure

    async def check(self) -> ProviderHealth:
        return ProviderHealth(self.name, ok=True, detail="null provider: nothing to reach")

    async def list_devices(self) -> list[RemoteDevice]:
        return []

    async def prepare(self, session: SessionSpec, device: DeviceRef, policy: GroupPolicy) -> Launch:
        return Launch(
            provider=self.name,
            handle=session.session_id,
            expires_at=session.window.end,
            details={"capabilities": list(session.capabilities)},
        )

    async def end(self, session: SessionSpec, device: DeviceRef, handle: str | None) -> None:
        self.ended.append(session.session_id)

    async def collect(self, device: DeviceRef, window: Window) -> list[ProviderEvent]:
        return []

    def belongs_to(self, event: ProviderEvent, session: SessionSpec) -> bool:
        return False

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        return None

    async def terminate(self, event: ProviderEvent) -> bool:
        return False

    async def aclose(self) -> None:
        return None
