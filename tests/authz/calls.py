"""How each route is called as each principal, and what an allowed answer may contain.

A builder (``Build``) turns a ``Cell`` (the world, the principal) into one ``Call``; where the
call changes state it first asks the cell for fresh resources. A ``Check`` looks at an
allowed cell's body: that the principal sees what it may, and nothing more.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.auth.permissions import grants_for
from tests.authz.world import (
    END_USER_NAME,
    HOOK_SECRET,
    HOOK_SYSTEM,
    ONE_TIME,
    SYSTEM_A,
    SYSTEM_B,
    TICKET_ID,
    Cell,
    signed_webhook,
)


@dataclass(frozen=True)
class Call:
    """One request of a cell. ``ws``: a WebSocket connection (``params`` is its query)."""

    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: bool = True  # send the caller's credentials (consent-token cells do not)
    creates_session: bool = False  # a session it creates is revoked after the cell
    ws: bool = False
    first: str | None = None  # a WebSocket's first text frame, sent once it is accepted


Build = Callable[[Cell], Awaitable[Call]]
# Runs on an allowed cell's response body: what the principal may see, and nothing more.
Check = Callable[[Cell, Any], None]


def fixed(method: str, path: str, **kw: Any) -> Build:
    async def _build(cell: Cell) -> Call:
        return Call(method, path, **kw)

    return _build


V1 = "/api/v1"


# --- auth ------------------------------------------------------------------------------------


async def login(cell: Cell) -> Call:
    username, password = cell.world.login_account
    cell.own_client()
    return Call("POST", f"{V1}/auth/login", json={"username": username, "password": password})


BROWSERS = frozenset({"admin-cookie", "admin-cookie-no-csrf", ONE_TIME})


async def logout(cell: Cell) -> Call:
    if cell.principal in BROWSERS:
        await cell.fresh_browser()
    return Call("POST", f"{V1}/auth/logout")


async def password(cell: Cell) -> Call:
    current = "not-the-password-0"
    if cell.principal in BROWSERS:
        caller = await cell.fresh_browser()
        current = caller.password or current
    body = {"current_password": current, "new_password": "a-new-password-" + secrets.token_hex(4)}
    return Call("POST", f"{V1}/auth/password", json=body)


async def _user_id(cell: Cell) -> str:
    return (await cell.fresh_user()).id


async def get_user(cell: Cell) -> Call:
    return Call("GET", f"{V1}/users/{cell.world.users['technician'].id}")


async def patch_user(cell: Cell) -> Call:
    user = await _user_id(cell)
    return Call("PATCH", f"{V1}/users/{user}", json={"display_name": "Renamed Tech"})


async def reset_password(cell: Cell) -> Call:
    return Call("POST", f"{V1}/users/{await _user_id(cell)}/reset-password")


async def unlock_user(cell: Cell) -> Call:
    return Call("POST", f"{V1}/users/{await _user_id(cell)}/unlock")


async def create_user(cell: Cell) -> Call:
    body = {"username": f"new-{secrets.token_hex(4)}", "role": "technician"}
    return Call("POST", f"{V1}/users", json=body)


async def create_token(cell: Cell) -> Call:
    body = {"name": f"ci-{secrets.token_hex(3)}", "scopes": ["tickets:read"], "system": "ci"}
    return Call("POST", f"{V1}/tokens", json=body)


async def revoke_token(cell: Cell) -> Call:
    return Call("DELETE", f"{V1}/tokens/{await cell.fresh_token()}")


ROLE_OF = {
    "technician": "technician",
    "other-technician": "technician",
    "colleague": "technician",
    "tech-tickets-read": "technician",
    "tech-all-scopes": "technician",
    "auditor": "auditor",
    "supervisor": "supervisor",
    "system-a": "integration",
    "system-b": "integration",
}


def check_me(cell: Cell, body: Any) -> None:
    assert body["role"] == ROLE_OF.get(cell.principal, "admin"), body
    granted = set(grants_for(body["role"]))
    assert set(body["scopes"]) <= {s.value for s in granted}, body
    if cell.principal.endswith("tickets-read"):
        assert body["scopes"] == ["tickets:read"], body
    assert body["must_change_password"] is (cell.principal == ONE_TIME), body


# --- tickets ---------------------------------------------------------------------------------


async def create_ticket(cell: Cell) -> Call:
    body = {
        "system": SYSTEM_A,
        "external_id": f"HD-{secrets.token_hex(4)}",
        "subject": "Monitor flickers",
        "requester": END_USER_NAME,
    }
    return Call("POST", f"{V1}/tickets", json=body)


TICKET_PATH = f"{V1}/tickets/{SYSTEM_A}/{TICKET_ID}"


async def list_tickets(cell: Cell) -> Call:
    """System B asks for system A's tickets by name: refused, not filtered."""
    params = {"system": SYSTEM_A} if cell.principal == "system-b" else None
    return Call("GET", f"{V1}/tickets", params=params)


def check_tickets(cell: Cell, body: Any) -> None:
    systems = {t["system"] for t in body["items"]}
    if cell.principal == "system-a":
        assert systems == {SYSTEM_A}, systems
    else:
        assert {SYSTEM_A, SYSTEM_B} <= systems, systems


# --- devices ---------------------------------------------------------------------------------


async def create_group(cell: Cell) -> Call:
    return Call("POST", f"{V1}/device-groups", json={"name": f"grp-{secrets.token_hex(4)}"})


def check_groups(cell: Cell, body: Any) -> None:
    names = {g["name"] for g in body["items"]}
    if cell.principal == "other-technician":
        assert names == set(), names
    elif cell.principal in ("technician", "tech-all-scopes", "colleague", "supervisor"):
        assert names == {cell.world.group.name}, names
    else:
        assert {cell.world.group.name, cell.world.spare_group.name} <= names, names


async def list_devices(cell: Cell) -> Call:
    """A technician outside the group asks for its devices by group id."""
    params = {"group_id": cell.world.group.id} if cell.principal == "other-technician" else None
    return Call("GET", f"{V1}/devices", params=params)


def check_devices(cell: Cell, body: Any) -> None:
    ids = {d["id"] for d in body["items"]}
    if cell.principal == "other-technician":
        assert ids == set(), ids
    else:
        assert cell.world.device.id in ids, ids


async def device_names(cell: Cell) -> Call:
    """Suggestions from the world device's first letters (a technician outside its group
    must get none of its names)."""
    return Call("GET", f"{V1}/device-names", params={"prefix": cell.world.device.name[:3]})


def check_device_names(cell: Cell, body: Any) -> None:
    ids = {d["id"] for d in body["items"]}
    if cell.principal == "other-technician":
        assert cell.world.device.id not in ids, ids
    else:
        assert cell.world.device.id in ids, ids


async def group(cell: Cell) -> Call:
    return Call("GET", f"{V1}/device-groups/{cell.world.group.id}")


async def patch_group(cell: Cell) -> Call:
    body = {"description": f"front desk {secrets.token_hex(2)}"}
    return Call("PATCH", f"{V1}/device-groups/{cell.world.spare_group.id}", json=body)


async def add_member(cell: Cell) -> Call:
    user = await _user_id(cell)
    return Call("PUT", f"{V1}/device-groups/{cell.world.spare_group.id}/members/{user}")


async def remove_member(cell: Cell) -> Call:
    user = await cell.fresh_member()
    return Call("DELETE", f"{V1}/device-groups/{cell.world.spare_group.id}/members/{user}")


async def create_device(cell: Cell) -> Call:
    body = {
        "name": f"pc-{secrets.token_hex(3)}",
        "group_id": cell.world.spare_group.id,
        "provider": "null",
        "provider_device_id": secrets.token_hex(8),
    }
    return Call("POST", f"{V1}/devices", json=body)


async def device(cell: Cell) -> Call:
    return Call("GET", f"{V1}/devices/{cell.world.device.id}")


async def patch_device(cell: Cell) -> Call:
    body = {"asset_tag": f"INV-{secrets.token_hex(3)}"}
    return Call("PATCH", f"{V1}/devices/{cell.world.device.id}", json=body)


async def delete_device(cell: Cell) -> Call:
    return Call("DELETE", f"{V1}/devices/{(await cell.fresh_device()).id}")


async def retire_device(cell: Cell) -> Call:
    return Call("POST", f"{V1}/devices/{(await cell.fresh_device()).id}/retire")


# --- sessions --------------------------------------------------------------------------------


async def create_session(cell: Cell) -> Call:
    body = {
        "ticket": {"system": SYSTEM_A, "external_id": TICKET_ID, "subject": "Printer"},
        "device_id": cell.world.device.id,
        "reason": "Printer driver keeps crashing after the update",
        "capabilities": ["view"],
        "duration_minutes": 15,
    }
    return Call("POST", f"{V1}/sessions", json=body, creates_session=True)


PEERS = ("other-technician", "colleague")


async def list_sessions(cell: Cell) -> Call:
    """A technician asks for another technician's sessions by id: filtered to their own."""
    if cell.principal in PEERS:
        return Call("GET", f"{V1}/sessions", params={"technician_id": cell.world.tech_id})
    return Call("GET", f"{V1}/sessions")


def check_sessions(cell: Cell, body: Any) -> None:
    ids = {s["id"] for s in body["items"]}
    if cell.principal in PEERS:
        own = cell.world.users[cell.principal].id
        assert cell.world.session_id not in ids, ids
        assert all(s["technician"]["id"] == own for s in body["items"]), body
    else:
        assert cell.world.session_id in ids, ids
    if cell.principal == "supervisor":  # only the sessions of the supervisor's groups
        assert all(s["device"]["id"] == cell.world.device.id for s in body["items"]), body


def check_queue(cell: Cell, body: Any) -> None:
    """The shared approved session and the end user's waiting request are in the queue."""
    entries = {e["session"]["id"]: e for e in body["items"]}
    assert cell.world.session_id in entries, entries
    assert entries[cell.world.consent.session_id]["waiting"] is True, entries
    assert entries[cell.world.session_id]["waiting"] is False, entries


async def session(cell: Cell) -> Call:
    return Call("GET", f"{V1}/sessions/{cell.world.session_id}")


def second_approval(method: str) -> Build:
    """A fresh request waiting for a second approval: read it, or approve it."""

    async def _build(cell: Cell) -> Call:
        session = await cell.fresh_pending_approval()
        body = {"decision": "approve", "reason": "matrix"} if method == "POST" else None
        return Call(method, f"{V1}/sessions/{session}/approval", json=body)

    return _build


def act(action: str, state: str) -> Build:
    async def _build(cell: Cell) -> Call:
        session = await cell.fresh_session(state)
        return Call("POST", f"{V1}/sessions/{session}/{action}", json={"reason": "matrix"})

    return _build


# --- consent (the link token is the credential) ----------------------------------------------


def consent(action: str, state: str, body: Any) -> Build:
    async def _build(cell: Cell) -> Call:
        if cell.principal == "end-user":
            token = (await cell.fresh_consent(state)).token if state else cell.world.consent.token
            return Call(_method(action), _consent_path(token, action), json=body, auth=False)
        made_up = secrets.token_urlsafe(32)
        return Call(_method(action), _consent_path(made_up, action), json=body)

    return _build


def _method(action: str) -> str:
    return "GET" if action == "" else "POST"


def _consent_path(token: str, action: str) -> str:
    return f"{V1}/consent/{token}" + (f"/{action}" if action else "")


async def lookup(cell: Cell) -> Call:
    if cell.principal == "end-user":
        code = (await cell.fresh_consent()).code
        return Call("POST", f"{V1}/consent/lookup", json={"code": code}, auth=False)
    return Call("POST", f"{V1}/consent/lookup", json={"code": f"{secrets.randbelow(10**8):08d}"})


async def _history_token(cell: Cell, session_id: str) -> str:
    from sqlalchemy import select

    from broker.consent.codes import history_token
    from broker.consent.models import ConsentRequest

    async with cell.app.state.sessionmaker() as db:
        request_id = await db.scalar(
            select(ConsentRequest.id).where(ConsentRequest.session_id == session_id)
        )
    key = cell.app.state.settings.secret_key.get_secret_value()
    return history_token(key, str(request_id))


def history(receipt: bool) -> Build:
    """The end user's history link (from their consent page); others make one up."""

    async def _build(cell: Cell) -> Call:
        if cell.principal == "end-user":
            consent = await cell.fresh_consent("ended")
            path = f"{V1}/history/{await _history_token(cell, consent.session_id)}"
            if receipt:
                path += f"/receipts/{consent.session_id}"
            return Call("GET", path, auth=False)
        made_up = f"{cell.world.consent.session_id}.{secrets.token_urlsafe(32)}"
        path = f"{V1}/history/{made_up}" + (
            f"/receipts/{cell.world.consent.session_id}" if receipt else ""
        )
        return Call("GET", path)

    return _build


# --- audit -----------------------------------------------------------------------------------

AUDIT_TICKET = f"{V1}/audit/tickets/{SYSTEM_A}/{TICKET_ID}"


async def erase(cell: Cell) -> Call:
    external_id = await cell.fresh_ticket_with_events()
    path = f"{V1}/audit/tickets/{SYSTEM_A}/{external_id}/erase"
    return Call("POST", path, json={"reason": "GDPR erasure request 2026-11"})


async def dual_control(cell: Cell) -> Call:
    """A ticket of its own: the shared ticket under dual control would refuse the replay
    and export cells that follow (one auditor alone may not)."""
    external_id = await cell.fresh_ticket_with_events()
    path = f"{V1}/audit/tickets/{SYSTEM_A}/{external_id}/dual-control"
    return Call("PUT", path, json={"dual_control": True, "reason": "VIP"})


async def _signed_size(cell: Cell) -> int:
    """Records (a new ticket's) and a checkpoint signed over them (here, or by the broker's
    own cadence first): its tree size."""
    from broker.evidence.checkpoints import sign_if_due
    from broker.evidence.service import audit_log_of

    await cell.fresh_ticket_with_events()
    await sign_if_due(cell.app.state.sessionmaker)
    async with cell.app.state.sessionmaker() as db:
        latest = await audit_log_of(db).latest_checkpoint(await db.connection())
    assert latest is not None
    return latest.size


async def checkpoint_by_size(cell: Cell) -> Call:
    return Call("GET", f"{V1}/audit/checkpoints/{await _signed_size(cell)}")


async def consistency(cell: Cell) -> Call:
    old, new = await _signed_size(cell), await _signed_size(cell)
    return Call("GET", f"{V1}/audit/consistency?old={old}&new={new}")


# --- connectors ------------------------------------------------------------------------------


async def webhook(cell: Cell) -> Call:
    """System A signs with its webhook secret, system B with a wrong one; the rest unsigned."""
    path = f"{V1}/connectors/{HOOK_SYSTEM}/webhook"
    if cell.principal in ("system-a", "system-b"):
        secret = HOOK_SECRET if cell.principal == "system-a" else "wrong-" + HOOK_SECRET
        body, headers = signed_webhook(secret)
        return Call("POST", path, content=body, headers=headers)
    return Call("POST", path, content=b'{"type": "ticket.updated", "ticket": {"id": "HOOK-1"}}')


# --- the built-in agent's gateway ------------------------------------------------------------


def _mode(cell: Cell) -> str:
    """Admins (sessions:admin) and the group's supervisor watch; everyone else asks for
    control."""
    watches = cell.principal.startswith("admin") or cell.principal == "supervisor"
    return "watch" if watches else "control"


async def terminal_ticket(cell: Cell) -> Call:
    path = f"{V1}/gateway/sessions/{cell.world.session_id}/terminal-ticket"
    return Call("POST", path, json={"mode": _mode(cell)})


def socket(route: str, **params: str) -> Build:
    """Ask for a terminal ticket with the caller's credentials (a made-up one if refused)
    on a fresh approved session, then open the WebSocket with it."""

    async def _build(cell: Cell) -> Call:
        session = await cell.fresh_session("approved")
        caller = cell.caller
        issued = await caller.client.post(
            f"{V1}/gateway/sessions/{session}/terminal-ticket",
            json={"mode": _mode(cell)},
            headers=caller.headers("POST"),
        )
        ticket = issued.json()["ticket"] if issued.status_code == 200 else secrets.token_hex(16)
        return Call("WS", f"{V1}{route}", params={"ticket": ticket, **params}, ws=True)

    return _build


async def peer_socket(cell: Cell) -> Call:
    """A replica's peer socket (broker.replicas.peering): no caller's credential counts, only
    a grant signed by a live registered replica; this one is made up (nobody's key)."""
    grant = {
        "origin": "replica-x", "target": "replica-y", "target_key": "", "session_id":
        cell.world.session_id, "principal_kind": "user", "principal_id": "0" * 36, "ip": None,
        "mode": "control", "channel": "terminal", "port": None, "expires": 0.0,
        "nonce": secrets.token_hex(16),
    }  # fmt: skip
    signature = base64.b64encode(bytes(64)).decode()
    first = json.dumps({"type": "grant", "grant": json.dumps(grant), "signature": signature})
    return Call("WS", f"{V1}/gateway/peer/terminal", ws=True, first=first)


def peer_files(suffix: str, method: str = "GET") -> Build:
    """A relayed file transfer on the replica holding the agent: no caller's credential
    counts, only a live replica's signed grant in its headers (none here)."""

    async def _build(cell: Cell) -> Call:
        path = f"{V1}/gateway/peer/sessions/{cell.world.session_id}/files{suffix}"
        params = {"path": "/tmp/peer.txt"} if suffix == "/content" else None
        return Call(method, path, params=params, content=b"x" if method == "PUT" else None)

    return _build


async def recordings(cell: Cell) -> Call:
    return Call("GET", f"{V1}/sessions/{cell.world.session_id}/recordings")


def check_socket(cell: Cell, body: Any) -> None:
    """Past the ticket and the session checks, stopped only by the missing agent."""
    assert body["error"] == "provider_error", body
    assert "agent is not connected" in body["detail"], body


def check_forward(cell: Cell, body: Any) -> None:
    """Technicians get as far as the missing agent; an admin's ticket only watches, and
    watching opens no port forward (refused before the agent is looked for)."""
    if _mode(cell) == "watch":
        assert body["error"] == "provider_error", body
        assert "only the session's technician opens port forwards" in body["detail"], body
        return
    check_socket(cell, body)


async def replay(cell: Cell) -> Call:
    path = f"{V1}/gateway/sessions/{cell.world.session_id}/replay"
    return Call("POST", path, json={"reason": "complaint review #12"})


async def playback_ask(cell: Cell) -> Call:
    body = {"session_id": cell.world.session_id, "reason": "complaint review #12"}
    return Call("POST", f"{V1}/audit/playback-requests", json=body)


async def playback_decide(cell: Cell) -> Call:
    """A fresh request of a second auditor: the world's auditor is a different one."""
    request_id = await cell.fresh_playback_request()
    path = f"{V1}/audit/playback-requests/{request_id}/decision"
    return Call("POST", path, json={"decision": "approve", "reason": "matrix"})


async def kept_file(cell: Cell) -> Call:
    path = f"{V1}/gateway/sessions/{cell.world.session_id}/files/kept/{'0' * 32}"
    return Call("POST", path, json={"reason": "complaint review #12"})


def files(suffix: str, method: str) -> Build:
    """A file route of the shared session (approved for the screen, not for files)."""

    async def _build(cell: Cell) -> Call:
        path = f"{V1}/gateway/sessions/{cell.world.session_id}/files{suffix}"
        body = b"payload" if method == "PUT" else None
        return Call(method, path, params={"path": "/srv/share/x.txt"}, content=body)

    return _build
