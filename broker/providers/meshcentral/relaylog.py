"""MeshCentral ``relaylog`` device events as ``ProviderEvent`` values.

Two shapes exist in MeshCentral 1.1.55 (``meshrelay.js``):

- agent relays (desktop, terminal, files): msgid 13-16/162 start, 9-12/112 end, ``msgArgs``
  ``[relay id, from address, to address(, seconds)]``, ``protocol`` the relay's ``p``;
- local relays to agentless devices (RDP, SSH, VNC, TCP through the server): msgid 120 start,
  121 end, ``msgArgs`` ``[relay id, protocol name, device host(, seconds)]``: no source address.

Shares add ``guestname``: that is how a connection is tied back to our session's share.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from broker.providers.base import ProviderEvent

Message = dict[str, Any]

RELAY_STARTS = {13, 14, 15, 16, 162}
RELAY_ENDS = {9, 10, 11, 12, 112}
LOCAL_START, LOCAL_END = 120, 121
# The relay's ``p`` query value; 10-14 are the local relay protocols.
PROTOCOLS = {
    1: "terminal",
    2: "desktop",
    5: "files",
    6: "terminal",
    8: "terminal",
    9: "terminal",
    10: "rdp",
    11: "ssh",
    12: "vnc",
    13: "ssh-files",
    14: "tcp",
    200: "messenger",
}


def parse_time(value: Any) -> datetime | None:
    """Event times come back as ISO strings (NeDB) or milliseconds (other databases)."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return None
    return None


def _protocol(raw: Any) -> str | None:
    text = str(raw) if raw is not None else ""
    if not text.isdigit():
        return None
    return PROTOCOLS.get(int(text), text)


def relay_event(provider: str, nodeid: str, raw: Message) -> ProviderEvent | None:
    """A ``relaylog`` entry as a ProviderEvent; None for entries we cannot read."""
    at = parse_time(raw.get("time"))
    msgid = raw.get("msgid")
    if at is None or not isinstance(msgid, int):
        return None
    args = list(raw.get("msgArgs") or [])
    relay_id = str(args[0]) if args else None
    identity = f"{nodeid}|{raw.get('time')}|{msgid}|{relay_id}|{raw.get('userid')}"
    kind = "connection"
    if msgid in RELAY_STARTS or msgid == LOCAL_START:
        kind = "connection.started"
    elif msgid in RELAY_ENDS or msgid == LOCAL_END:
        kind = "connection.ended"
    local = msgid in (LOCAL_START, LOCAL_END)
    # A local relay names the protocol where an agent relay names the connecting address.
    source = None if local or len(args) < 2 else str(args[1])
    target = str(args[2]) if len(args) > 2 else None
    duration = int(args[3]) if len(args) > 3 and str(args[3]).isdigit() else None
    return ProviderEvent(
        provider=provider,
        key="mc:" + hashlib.sha256(identity.encode()).hexdigest()[:40],
        provider_device_id=nodeid,
        kind=kind,
        at=at,
        user=raw.get("username") or raw.get("userid"),
        guest_name=raw.get("guestname"),
        source_address=source,
        target_address=target,
        duration_seconds=duration,
        remote_id=relay_id,
        protocol=_protocol(raw.get("protocol")),
        detail=raw.get("msg"),
    )
