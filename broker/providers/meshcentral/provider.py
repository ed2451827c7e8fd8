"""MeshCentral as a remote-access provider: guest share links for approved sessions.

On approval we create a device share for exactly the approved rights (``p``: terminal 1,
desktop 2, files 4; ``view`` without ``control`` makes it view-only) and the approved window
(``start``/``end``), with MeshCentral's consent bits so the device prompts (or only notifies,
per device group), and write the ticket reference into the device's event log, shortened to
what MeshCentral stores and read back to make sure it is there (it answers nothing, and drops
a note over 4,096 encoded characters in silence). The share's
guest name carries ``[sb-<session id>]`` so relay log entries can be tied back to the session,
and so a share whose creation reply was lost can be found (and adopted, not duplicated). No
share outlives a failed ``prepare``; ``end`` removes every share carrying the session's tag.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit, urlunsplit

import structlog

from broker.errors import ProviderError
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
from broker.providers.meshcentral.client import (
    ConnectionLostError,
    MeshControl,
    Message,
    RequestTimeoutError,
)
from broker.providers.meshcentral.relaylog import relay_event
from broker.providers.meshcentral.settings import MeshCentralSettings

__all__ = ["MeshCentralProvider", "guest_name", "relay_event", "session_tag"]

log = structlog.get_logger("broker.providers.meshcentral")

RIGHT_TERMINAL, RIGHT_DESKTOP, RIGHT_FILES = 1, 2, 4
NOTIFY = {RIGHT_DESKTOP: 1, RIGHT_TERMINAL: 2, RIGHT_FILES: 4}
PROMPT = {RIGHT_DESKTOP: 8, RIGHT_TERMINAL: 16, RIGHT_FILES: 32}
TOOLBAR = 64
NOTE_EVENTS = 20  # the newest events of the device, where a note just written shows up


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


# MeshCentral 1.1.55 ignores a setDeviceEvent whose (encoded) ``msg`` is longer than this,
# without a word (meshuser.js: ``validateString(command.msg, 1, 4096)``). Encoded, a
# non-Latin character takes up to 9 of them: a 1,000-character reason is too long.
NOTE_LIMIT = 4096
ELLIPSIS = "\u2026"


def fit_note(text: str, limit: int = NOTE_LIMIT) -> str:
    """``text`` cut (at a character, with an ellipsis) so its encoded form fits ``limit``."""
    if len(encode_uri_component(text)) <= limit:
        return text
    budget = limit - len(encode_uri_component(ELLIPSIS))
    kept, used = [], 0
    for char in text:
        cost = len(encode_uri_component(char))
        if used + cost > budget:
            break
        kept.append(char)
        used += cost
    return "".join(kept).rstrip() + ELLIPSIS


def session_tag(session_id: str) -> str:
    """What our share's guest name carries; relay log entries repeat it."""
    return f"[sb-{session_id}]"


def guest_name(session: SessionSpec) -> str:
    tag = " " + session_tag(session.session_id)
    label = f"{session.technician} ({session.ticket_ref})"
    return label[: 128 - len(tag)] + tag


def _node_id(value: str, domain: str) -> str:
    return value if value.startswith("node/") else f"node/{domain}/{value}"


class MeshCentralProvider:
    name = "meshcentral"
    # Desktop, terminal and files through a guest share; MeshCentral's own log gives us the
    # connections (events), we never see the screen or the terminal's bytes.
    offers = Offer(frozenset({"view", "control", "shell", "files"}))
    # The device-wide sweep reads its devices' connections (broker.providers.sweep).
    device_sweep = True

    def __init__(self, settings: MeshCentralSettings, control: MeshControl | None = None) -> None:
        self.settings = settings
        self.control = control or MeshControl(settings)
        self.note_limit = NOTE_LIMIT

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
        reply = await self._create_share(command, session, device)
        publicid = str(reply["publicid"])
        # The reference comes first: a note cut to fit loses the end of the reason, not it.
        text = (
            f"supportbroker: {session.ticket_ref} session {session.session_id} approved for "
            f"{session.technician}, rights {'+'.join(session.capabilities)}, until "
            f"{session.window.end.isoformat(timespec='minutes')}. Reason: {session.reason}"
        )
        try:
            written = await self.note(nodeid, text)
        except ProviderError as exc:
            # No share may outlive a failed approval: the caller fails the session.
            withdrawn = await self._withdraw_after_failure(nodeid, session.session_id)
            raise ProviderError(
                f"MeshCentral could not record the ticket reference on device {device.name} "
                f"({exc.detail}); {withdrawn}"
            ) from exc
        return Launch(
            provider=self.name,
            handle=publicid,
            expires_at=datetime.fromtimestamp(command["end"], UTC),
            url=self._public(str(reply["url"])),
            details={
                "publicid": publicid,
                "p": p,
                "view_only": view_only,
                "consent": consent,
                "consent_mode": mode,
                "guest_name": command["guestname"],
                "note_shortened": written != text,
            },
        )

    async def _create_share(
        self, command: Message, session: SessionSpec, device: DeviceRef
    ) -> Message:
        """``createDeviceShareLink``, made safe to retry: when the reply is lost (connection
        dropped, timeout) the share may exist, so look for it by its session tag and adopt it;
        send again only when it is not there."""
        nodeid, tag = str(command["nodeid"]), session_tag(session.session_id)
        try:
            reply = await self.control.request(command)
        except (ConnectionLostError, RequestTimeoutError) as exc:
            log.warning("meshcentral.share_outcome_unknown", nodeid=nodeid, error=exc.detail)
            found = await self._tagged_shares(nodeid, tag)
            if not found:
                reply = await self.control.request(command)
            else:
                for extra in found[1:]:  # never more than one live share per session
                    await self.remove_share(nodeid, str(extra["publicid"]))
                reply = {"result": "OK", "publicid": found[0].get("publicid")}
                reply["url"] = found[0].get("url")
        if reply.get("result") != "OK" or not reply.get("publicid") or not reply.get("url"):
            raise ProviderError(
                f"MeshCentral did not create the share for device {device.name}: "
                f"{reply.get('result', 'no result')}"
            )
        return reply

    async def _tagged_shares(self, nodeid: str, tag: str) -> list[Message]:
        return [s for s in await self.shares(nodeid) if tag in str(s.get("guestName", ""))]

    async def _withdraw_after_failure(self, nodeid: str, session_id: str) -> str:
        """Remove the session's shares after a failed ``prepare``; says what happened."""
        try:
            removed = await self._remove_tagged(nodeid, session_id)
        except ProviderError as exc:
            # Reported in the error the caller seals into the audit log, not swallowed.
            return f"the share could NOT be removed ({exc.detail}); it expires with the window"
        return f"the share was removed ({removed} share(s))"

    async def _remove_tagged(self, nodeid: str, session_id: str) -> int:
        removed = 0
        for share in await self._tagged_shares(nodeid, session_tag(session_id)):
            removed += int(await self.remove_share(nodeid, str(share["publicid"])))
        return removed

    def _public(self, url: str) -> str:
        """MeshCentral builds ``https://<cert name>:<port>/sharing?c=...``; put it on the base
        the technician reaches (tlsOffload, reverse proxy)."""
        base = self.settings.public_url or self.settings.url
        parts, target = urlsplit(url), urlsplit(base)
        return urlunsplit((target.scheme, target.netloc, target.path + parts.path, parts.query, ""))

    async def end(self, session: SessionSpec, device: DeviceRef, handle: str | None) -> None:
        """Remove the session's share, and any other share carrying its tag (one created
        while a reply was lost); already-expired shares are simply gone."""
        nodeid = _node_id(device.provider_device_id, self.settings.domain)
        if handle:
            await self.remove_share(nodeid, handle)
        await self._remove_tagged(nodeid, session.session_id)

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

    async def note(self, nodeid: str, text: str) -> str:
        """Write ``text`` (shortened to fit, see :func:`fit_note`) into the device's event
        log and look for it there: MeshCentral answers nothing, so a note it dropped would
        otherwise be lost in silence. Returns what was written; ProviderError when it did
        not appear within ``note_confirm_timeout``."""
        written = fit_note(text, self.note_limit)
        await self.control.send(
            {"action": "setDeviceEvent", "nodeid": nodeid, "msg": encode_uri_component(written)}
        )
        deadline = asyncio.get_running_loop().time() + self.settings.note_confirm_timeout
        delay = 0.02
        while True:
            recent = await self.events(nodeid, limit=NOTE_EVENTS)
            if any(e.get("action") == "manual" and e.get("msg") == written for e in recent):
                return written
            if asyncio.get_running_loop().time() >= deadline:
                raise ProviderError(
                    f"MeshCentral did not record the note ({len(written)} characters) in the "
                    f"device's event log within {self.settings.note_confirm_timeout:g}s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

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
        return bool(event.guest_name) and session_tag(session.session_id) in str(event.guest_name)

    async def annotate(self, event: ProviderEvent, text: str) -> None:
        return None  # the ticket reference went into the device log at prepare time

    async def terminate(self, event: ProviderEvent) -> bool:
        return False  # the control API cannot cut a relay; the share's removal stops re-entry
