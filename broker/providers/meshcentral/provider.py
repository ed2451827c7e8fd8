"""MeshCentral as a remote-access provider: guest share links for approved sessions.

On approval we create a device share for exactly the approved rights (``p``: terminal 1,
desktop 2, files 4; ``view`` without ``control`` makes it view-only) and the approved window
(``start``/``end``), with MeshCentral's consent bits so the device prompts (or only notifies,
per device group), and write the ticket reference into the device's event log. The share's
guest name carries ``[sb-<session id>]`` so relay log entries can be tied back to the session.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from broker.errors import ProviderError
from broker.providers.base import (
    DeviceRef,
    GroupPolicy,
    Launch,
    ProviderEvent,
    ProviderHealth,
    RemoteDevice,
    SessionSpec,
    Window,
)
from broker.providers.meshcentral.client import MeshControl, Message
from broker.providers.meshcentral.settings import MeshCentralSettings

RIGHT_TERMINAL, RIGHT_DESKTOP, RIGHT_FILES = 1, 2, 4
NOTIFY = {RIGHT_DESKTOP: 1, RIGHT_TERMINAL: 2, RIGHT_FILES: 4}
PROMPT = {RIGHT_DESKTOP: 8, RIGHT_TERMINAL: 16, RIGHT_FILES: 32}
TOOLBAR = 64
RELAY_STARTS = {13, 14, 15, 16, 120, 162}
RELAY_ENDS = {9, 10, 11, 12, 112, 121}
PROTOCOLS = {1: "terminal", 2: "desktop", 5: "files", 6: "terminal", 8: "terminal", 9: "terminal"}


def share_rights(capabilities: tuple[str, ...]) -> tuple[int, bool]:
    """``(p, view_only)`` for our capabilities; refuses a set that grants nothing."""
    caps = set(capabilities)
    p = 0
    if caps & {"view", "control"}:
        p |= RIGHT_DESKTOP
    if "shell" in caps:
        p |= RIGHT_TERMINAL
    if "files" in caps:
        p |= RIGHT_FILES
    if p == 0:
        raise ProviderError(f"no MeshCentral right matches capabilities {sorted(caps)}")
    return p, "control" not in caps


def consent_flags(p: int, mode: str, *, toolbar: bool = True) -> int:
    flags = TOOLBAR if toolbar else 0
    for right in (RIGHT_DESKTOP, RIGHT_TERMINAL, RIGHT_FILES):
        if p & right:
            flags |= NOTIFY[right]
            if mode == "prompt":
                flags |= PROMPT[right]
    return flags


def encode_uri_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``: MeshCentral ``decodeURIComponent``s event text and
    a raw ``%`` (any ticket subject may hold one) crashes 1.1.55."""
    return quote(text, safe="-_.!~*'()")


def guest_name(session: SessionSpec) -> str:
    tag = f" [sb-{session.session_id}]"
    label = f"{session.technician} ({session.ticket_ref})"
    return label[: 128 - len(tag)] + tag


def _node_id(value: str, domain: str) -> str:
    return value if value.startswith("node/") else f"node/{domain}/{value}"


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return None
    return None


class MeshCentralProvider:
    name = "meshcentral"

    def __init__(self, settings: MeshCentralSettings, control: MeshControl | None = None) -> None:
        self.settings = settings
        self.control = control or MeshControl(settings)

    @classmethod
    def from_env(cls) -> MeshCentralProvider:
        return cls(MeshCentralSettings())

    async def aclose(self) -> None:
        await self.control.aclose()

    # -- health and inventory ---------------------------------------------------------------

    async def check(self) -> ProviderHealth:
        try:
            await self.control.request({"action": "ping"}, reply_action="pong", idempotent=True)
            meshes = await self.meshes()
        except ProviderError as exc:
            return ProviderHealth(self.name, ok=False, detail=exc.detail)
        user = self.control.userinfo.get("name", self.settings.username)
        return ProviderHealth(
            self.name,
            ok=True,
            detail=f"connected to {self.settings.url} as {user}; {len(meshes)} device group(s)",
            facts={
                "user": user,
                "groups": len(meshes),
                "server": self.control.serverinfo.get("name"),
            },
        )

    async def meshes(self) -> list[Message]:
        reply = await self.control.request(
            {"action": "meshes"}, reply_action="meshes", idempotent=True
        )
        return list(reply.get("meshes") or [])

    async def nodes(self) -> dict[str, list[Message]]:
        reply = await self.control.request(
            {"action": "nodes"}, reply_action="nodes", idempotent=True
        )
        if isinstance(reply.get("result"), str):
            raise ProviderError(f"MeshCentral refused to list devices: {reply['result']}")
        return dict(reply.get("nodes") or {})

    async def list_devices(self) -> list[RemoteDevice]:
        names = {
            m["_id"]: m.get("name") or self.settings.fallback_group for m in await self.meshes()
        }
        devices = []
        for meshid, nodes in (await self.nodes()).items():
            group = names.get(meshid, self.settings.fallback_group)
            for node in nodes:
                devices.append(
                    RemoteDevice(
                        provider_device_id=node["_id"],
                        name=node.get("name") or node["_id"],
                        group_name=group,
                        online=bool(node.get("conn", 0) & 1) if "conn" in node else None,
                    )
                )
        return devices

    # -- sessions ---------------------------------------------------------------------------

    async def prepare(self, session: SessionSpec, device: DeviceRef, policy: GroupPolicy) -> Launch:
        p, view_only = share_rights(session.capabilities)
        mode = self.settings.consent_mode(policy.group_name)
        consent = consent_flags(p, mode, toolbar=self.settings.show_toolbar)
        nodeid = _node_id(device.provider_device_id, self.settings.domain)
        start = int(session.window.start.timestamp())
        end = int(session.window.end.timestamp())
        command: Message = {
            "action": "createDeviceShareLink",
            "nodeid": nodeid,
            "guestname": guest_name(session),
            "p": p,
            "consent": consent,
            "start": start,
            "end": max(end, start + 60),
        }
        if view_only:
            command["viewOnly"] = True
        reply = await self.control.request(command)
        if reply.get("result") != "OK" or not reply.get("publicid") or not reply.get("url"):
            raise ProviderError(
                f"MeshCentral did not create the share for device {device.name}: "
                f"{reply.get('result', 'no result')}"
            )
        await self.note(
            nodeid,
            f"supportbroker: {session.ticket_ref} session {session.session_id} approved for "
            f"{session.technician}, rights {'+'.join(session.capabilities)}, until "
            f"{session.window.end.isoformat(timespec='minutes')}. Reason: {session.reason}",
        )
        return Launch(
            provider=self.name,
            handle=str(reply["publicid"]),
            expires_at=datetime.fromtimestamp(command["end"], UTC),
            url=self._public(str(reply["url"])),
            details={
                "publicid": reply["publicid"],
                "p": p,
                "view_only": view_only,
                "consent": consent,
                "consent_mode": mode,
                "guest_name": command["guestname"],
            },
        )

    def _public(self, url: str) -> str:
        """MeshCentral builds ``https://<cert name>:<port>/sharing?c=...``; put it on the base
        the technician reaches (tlsOffload, reverse proxy)."""
        base = self.settings.public_url or self.settings.url
        parts, target = urlsplit(url), urlsplit(base)
        return urlunsplit((target.scheme, target.netloc, target.path + parts.path, parts.query, ""))

    async def end(self, session: SessionSpec, device: DeviceRef, handle: str | None) -> None:
        if not handle:
            return
        await self.remove_share(_node_id(device.provider_device_id, self.settings.domain), handle)

    async def remove_share(self, nodeid: str, publicid: str) -> bool:
        """Remove a share; False when it was already gone (expired or removed)."""
        reply = await self.control.request(
            {"action": "removeDeviceShare", "nodeid": nodeid, "publicid": publicid},
            idempotent=True,
        )
        if "removed" in reply:
            return bool(reply["removed"] is not None)
        result = reply.get("result")
        if result in ("Invalid device share identifier.", "OK"):
            return bool(result == "OK")
        raise ProviderError(f"MeshCentral did not remove share {publicid}: {result}")

    async def shares(self, nodeid: str) -> list[Message]:
        reply = await self.control.request(
            {"action": "deviceShares", "nodeid": nodeid},
            reply_action="deviceShares",
            predicate=lambda m: m.get("nodeid") == nodeid,
            idempotent=True,
        )
        if isinstance(reply.get("result"), str):
            raise ProviderError(f"MeshCentral refused to list shares: {reply['result']}")
        return list(reply.get("deviceShares") or [])

    async def note(self, nodeid: str, text: str) -> None:
        await self.control.send(
            {"action": "setDeviceEvent", "nodeid": nodeid, "msg": encode_uri_component(text)}
        )

    async def events(
        self, nodeid: str, *, filter_: str | None = None, limit: int | None = None
    ) -> list[Message]:
        command: Message = {
            "action": "events",
            "nodeid": nodeid,
            "limit": limit or self.settings.events_limit,
        }
        if filter_:
            command["filter"] = filter_
        reply = await self.control.request(command, idempotent=True)
        return list(reply.get("events") or [])

    # -- reconciliation ---------------------------------------------------------------------

    async def collect(self, device: DeviceRef, window: Window) -> list[ProviderEvent]:
        nodeid = _node_id(device.provider_device_id, self.settings.domain)
        found = []
        for raw in await self.events(nodeid, filter_="relaylog"):
            event = relay_event(self.name, nodeid, raw)
            if event is not None and window.contains(event.at):
                found.append(event)
        return sorted(found, key=lambda e: e.at)

    def belongs_to(self, event: ProviderEvent, session: SessionSpec) -> bool:
        return bool(event.guest_name) and f"[sb-{session.session_id}]" in str(event.guest_name)

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        return None  # the ticket reference went into the device log at prepare time

    async def terminate(self, event: ProviderEvent) -> bool:
        return False  # the control API cannot cut a relay; the share's removal stops re-entry


def relay_event(provider: str, nodeid: str, raw: Message) -> ProviderEvent | None:
    """A ``relaylog`` entry as a ProviderEvent; None for entries we cannot read."""
    at = _parse_time(raw.get("time"))
    msgid = raw.get("msgid")
    if at is None or not isinstance(msgid, int):
        return None
    args = list(raw.get("msgArgs") or [])
    relay_id = str(args[0]) if args else None
    identity = f"{nodeid}|{raw.get('time')}|{msgid}|{relay_id}|{raw.get('userid')}"
    kind = "connection"
    if msgid in RELAY_STARTS:
        kind = "connection.started"
    elif msgid in RELAY_ENDS:
        kind = "connection.ended"
    duration = int(args[3]) if len(args) > 3 and str(args[3]).isdigit() else None
    protocol = raw.get("protocol")
    return ProviderEvent(
        provider=provider,
        key="mc:" + hashlib.sha256(identity.encode()).hexdigest()[:40],
        provider_device_id=nodeid,
        kind=kind,
        at=at,
        user=raw.get("username") or raw.get("userid"),
        guest_name=raw.get("guestname"),
        source_address=str(args[1]) if len(args) > 1 else None,
        target_address=str(args[2]) if len(args) > 2 else None,
        duration_seconds=duration,
        remote_id=relay_id,
        protocol=PROTOCOLS.get(int(str(protocol)), str(protocol))
        if str(protocol).isdigit()
        else None,
        detail=raw.get("msg"),
    )
