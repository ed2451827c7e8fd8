"""The built-in agent as a ``RemoteAccessProvider`` (entry point ``agent``).

The gateway does the work: consent reaches the device through the agent's control channel
and the technician attaches through the terminal WebSocket or ``supportbroker connect``, so
``prepare`` only says where to go; ``end`` has nothing to withdraw because the gateway's
poller tells the agent, which drops its grant and closes the channels.
"""

from __future__ import annotations

from broker.providers.base import (
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


class AgentProvider:
    name = "agent"
    # What our agent can give: the terminal, recorded by the gateway (asciicast); the screen
    # (view, control through x11vnc, docs/DESKTOP.md), its RFB stream recorded by the gateway
    # (input counted, not kept, unless the group records input); files and port forwards,
    # logged as events (name, size, hash; port), not content. A device whose agent cannot
    # show a screen says so in its hello (devices.unavailable), refused per device at
    # request time.
    offers = Offer(
        capabilities=frozenset({"shell", "files", "forward", "view", "control"}),
        recorded=frozenset({"shell", "view", "control"}),
    )

    @classmethod
    def from_env(cls) -> AgentProvider:
        return cls()

    async def check(self) -> ProviderHealth:
        return ProviderHealth(self.name, ok=True, detail="built into the broker (SSH gateway)")

    async def list_devices(self) -> list[RemoteDevice]:
        return []  # agents enroll themselves into the device table

    async def prepare(self, session: SessionSpec, device: DeviceRef, policy: GroupPolicy) -> Launch:
        return Launch(
            provider=self.name,
            handle=session.session_id,
            expires_at=session.window.end,
            url=f"/terminal/{session.session_id}",
            terminal=f"supportbroker connect {session.session_id}",
            details={
                "capabilities": list(session.capabilities),
                "unattended": policy.unattended_allowed,
            },
        )

    async def end(self, session: SessionSpec, device: DeviceRef, handle: str | None) -> None:
        return None

    async def collect(self, device: DeviceRef, window: Window) -> list[ProviderEvent]:
        return []  # everything is recorded by the gateway as it happens

    def belongs_to(self, event: ProviderEvent, session: SessionSpec) -> bool:
        return False

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        return None

    async def terminate(self, event: ProviderEvent) -> bool:
        return False

    async def aclose(self) -> None:
        return None
