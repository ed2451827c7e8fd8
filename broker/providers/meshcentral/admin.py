"""MeshCentral administration the broker needs besides sessions: groups and agentless devices.

Used by device set-up and by the integration tests (a ``meshtype`` 3 group holds "local"
devices added through the API, so tests need no agent).
"""

from __future__ import annotations

import asyncio

from broker.errors import ProviderError
from broker.providers.meshcentral.client import MeshControl

MESH_AGENT, MESH_LOCAL = 2, 3
LOCAL_WINDOWS, LOCAL_LINUX = 4, 29  # agent.id values addlocaldevice accepts (4, 6, 29)


async def create_group(
    control: MeshControl, name: str, *, meshtype: int = MESH_LOCAL, consent: int = 73
) -> str:
    reply = await control.request(
        {"action": "createmesh", "meshname": name, "meshtype": meshtype, "consent": consent}
    )
    if reply.get("result") != "ok" or not reply.get("meshid"):
        raise ProviderError(f"MeshCentral did not create group {name!r}: {reply.get('result')}")
    return str(reply["meshid"])


async def add_local_device(
    control: MeshControl, meshid: str, name: str, host: str, *, kind: int = LOCAL_LINUX
) -> str:
    """Add an agentless device; the reply carries no id, so find it by name afterwards."""
    reply = await control.request(
        {
            "action": "addlocaldevice",
            "meshid": meshid,
            "devicename": name,
            "hostname": host,
            "type": kind,
        }
    )
    if reply.get("result") != "ok":
        raise ProviderError(f"MeshCentral did not add device {name!r}: {reply.get('result')}")
    for _ in range(50):  # the node is written asynchronously after the reply
        nodes = await control.request({"action": "nodes"}, reply_action="nodes", idempotent=True)
        for node in (nodes.get("nodes") or {}).get(meshid, []):
            if node.get("name") == name:
                return str(node["_id"])
        await asyncio.sleep(0.05)
    raise ProviderError(f"MeshCentral added device {name!r} but does not list it")
