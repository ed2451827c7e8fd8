"""The ``RemoteAccessProvider`` port and the plain values that cross it.

Providers know nothing of our database: the service hands them a ``SessionSpec`` (what was
approved), a ``DeviceRef`` and the group's ``GroupPolicy``, and gets back a ``Launch`` (what the
technician opens) or ``ProviderEvent`` values (what the provider itself recorded). Every
provider error reaches the service as ``broker.errors.ProviderError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

CAPABILITIES = ("view", "control", "shell", "files", "forward")
ConsentMode = Literal["prompt", "notify"]


@dataclass(frozen=True)
class Offer:
    """What a provider can give, and of that what we record ourselves (the content: the
    terminal, the screen). For the rest only the events are kept (who, when, what opened).

    Each provider class declares its own as the class attribute ``offers``; the request
    form, the API and the consent page offer exactly ``capabilities``."""

    capabilities: frozenset[str]
    recorded: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = (self.capabilities | self.recorded) - set(CAPABILITIES)
        if unknown or not self.recorded <= self.capabilities:
            raise ValueError(f"offer names unknown or ungiven capabilities: {sorted(unknown)}")


@dataclass(frozen=True)
class Window:
    """A half-open time interval ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True)
class SessionSpec:
    """An approved request as a provider needs it."""

    session_id: str
    ticket_ref: str
    technician: str
    reason: str
    capabilities: tuple[str, ...]
    window: Window


@dataclass(frozen=True)
class DeviceRef:
    """Our device and its identity at the provider (MeshCentral node id, AnyDesk client id)."""

    device_id: str
    name: str
    provider_device_id: str
    group_name: str


@dataclass(frozen=True)
class GroupPolicy:
    """What the device group decides for provider sessions."""

    group_name: str
    unattended_allowed: bool = False


@dataclass(frozen=True)
class Launch:
    """What the technician opens: any of a URL, a URI, a terminal command, a port."""

    provider: str
    handle: str | None
    expires_at: datetime
    url: str | None = None
    uri: str | None = None
    terminal: str | None = None
    port: int | None = None
    # Audit-safe facts about what was created (rights, consent flags); never credentials.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderEvent:
    """One connection the provider recorded on a device."""

    provider: str
    key: str  # unique per provider: deduplicates reconciliation
    provider_device_id: str
    kind: str  # connection.started | connection.ended | connection
    at: datetime
    user: str | None = None
    guest_name: str | None = None
    source_address: str | None = None
    target_address: str | None = None
    ended_at: datetime | None = None
    duration_seconds: int | None = None
    active: bool = False
    remote_id: str | None = None  # the provider's id for the connection (AnyDesk sid)
    protocol: str | None = None
    detail: str | None = None

    def audit_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "provider": self.provider,
            "provider_event": self.key,
            "kind": self.kind,
            "at": self.at.isoformat(),
        }
        optional = {
            "user": self.user,
            "guest_name": self.guest_name,
            "source_address": self.source_address,
            "target_address": self.target_address,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_seconds": self.duration_seconds,
            "remote_id": self.remote_id,
            "protocol": self.protocol,
            "detail": self.detail,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        if self.active:
            data["active"] = True
        return data


@dataclass(frozen=True)
class RemoteDevice:
    provider_device_id: str
    name: str
    group_name: str
    online: bool | None = None


@dataclass(frozen=True)
class ProviderHealth:
    provider: str
    ok: bool
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RemoteAccessProvider(Protocol):
    """A remote-access tool the broker drives. Implementations raise only ProviderError."""

    name: str
    offers: Offer

    async def check(self) -> ProviderHealth:
        """Reachable and authorised? Never raises: problems are reported in the result."""
        ...

    async def list_devices(self) -> list[RemoteDevice]: ...

    async def prepare(self, session: SessionSpec, device: DeviceRef, policy: GroupPolicy) -> Launch:
        """Create access for exactly the approved capabilities and window."""
        ...

    async def end(self, session: SessionSpec, device: DeviceRef, handle: str | None) -> None:
        """Withdraw what ``prepare`` created; idempotent."""
        ...

    async def collect(self, device: DeviceRef, window: Window) -> list[ProviderEvent]:
        """What the provider recorded about connections to the device in ``window``."""
        ...

    def belongs_to(self, event: ProviderEvent, session: SessionSpec) -> bool:
        """Whether the provider can tell ``event`` was made through ``session``'s access."""
        ...

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        """Write our reference (ticket, session) onto the provider's record of ``event``."""
        ...

    async def terminate(self, event: ProviderEvent) -> bool:
        """Stop a live connection the broker did not approve; False when not possible."""
        ...

    async def aclose(self) -> None: ...
