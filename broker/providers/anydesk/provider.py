"""AnyDesk as a remote-access provider.

AnyDesk cannot create or authorise a session: the broker's consent comes first, the technician
gets ``anydesk:<id>`` for the approved window, and reconciliation reads what AnyDesk reports
(``/sessions`` of the device's client id), comments the ticket reference onto each session,
and closes sessions that run outside an approved window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from broker.errors import ProviderError
from broker.providers.anydesk.client import AnyDeskClient, Json
from broker.providers.anydesk.settings import AnyDeskSettings
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


def _time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return _time(float(value)) if value.isdigit() else None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def session_event(provider: str, cid: str, raw: Json) -> ProviderEvent | None:
    sid = raw.get("sid")
    start = _time(raw.get("start-time"))
    if sid is None or start is None:
        return None
    active = bool(raw.get("active"))
    source = raw.get("from") or {}
    duration = raw.get("duration")
    return ProviderEvent(
        provider=provider,
        key=f"ad:{sid}:{'active' if active else 'ended'}",
        provider_device_id=cid,
        kind="connection.started" if active else "connection",
        at=start,
        user=source.get("alias") or source.get("cid"),
        source_address=f"anydesk:{source['cid']}" if source.get("cid") else None,
        target_address=f"anydesk:{cid}",
        ended_at=None if active else _time(raw.get("end-time")),
        duration_seconds=int(duration) if isinstance(duration, (int, float)) else None,
        active=active,
        remote_id=str(sid),
        detail=raw.get("comment") or None,
    )


class AnyDeskProvider:
    name = "anydesk"
    # The screen and the input; its session log gives us the connections (events only).
    offers = Offer(frozenset({"view", "control"}))
    # The device-wide sweep reads its devices' connections (broker.providers.sweep).
    device_sweep = True

    def __init__(
        self, settings: AnyDeskSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.api = AnyDeskClient(settings, transport)

    @classmethod
    def from_env(cls) -> AnyDeskProvider:
        return cls(AnyDeskSettings())  # values come from the environment

    async def aclose(self) -> None:
        await self.api.aclose()

    async def check(self) -> ProviderHealth:
        try:
            info = await self.api.auth()
        except ProviderError as exc:
            return ProviderHealth(self.name, ok=False, detail=exc.detail)
        name = info.get("license-name") or info.get("name") or self.settings.license_id
        return ProviderHealth(
            self.name,
            ok=True,
            detail=f"AnyDesk API at {self.settings.api_url} accepts license {name}",
            facts={"license": name},
        )

    async def list_devices(self) -> list[RemoteDevice]:
        return [
            RemoteDevice(
                provider_device_id=str(c["cid"]),
                name=str(c.get("alias") or c["cid"]),
                group_name=self.settings.import_group,
                online=c.get("online"),
            )
            for c in await self.api.clients()
            if c.get("cid") is not None
        ]

    async def prepare(self, session: SessionSpec, device: DeviceRef, policy: GroupPolicy) -> Launch:
        cid = device.provider_device_id.strip()
        if not cid or any(ch.isspace() for ch in cid):
            raise ProviderError(f"device {device.name} has no usable AnyDesk id")
        return Launch(
            provider=self.name,
            handle=cid,
            expires_at=session.window.end,
            uri=f"anydesk:{cid}",
            details={"cid": cid, "capabilities": list(session.capabilities)},
        )

    async def end(self, session: SessionSpec, device: DeviceRef, handle: str | None) -> None:
        # Nothing was created at AnyDesk; sessions still running after the window are
        # closed by reconciliation.
        return None

    async def collect(self, device: DeviceRef, window: Window) -> list[ProviderEvent]:
        cid = device.provider_device_id
        raw = await self.api.sessions(
            cid, int(window.start.timestamp()), int(window.end.timestamp()) + 1
        )
        events = [e for e in (session_event(self.name, cid, r) for r in raw) if e is not None]
        return sorted(events, key=lambda e: e.at)

    def belongs_to(self, event: ProviderEvent, session: SessionSpec) -> bool:
        # AnyDesk knows nothing of our sessions: a connection belongs to the approved
        # session whose window (with clock grace) it started in.
        grace = timedelta(seconds=self.settings.grace_seconds)
        return session.window.start - grace <= event.at < session.window.end

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        if event.remote_id:
            await self.api.comment(event.remote_id, text[:500])

    async def terminate(self, event: ProviderEvent) -> bool:
        if not event.remote_id:
            return False
        await self.api.close(event.remote_id)
        return True
