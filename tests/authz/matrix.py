"""The authorization matrix: one row per ``/api/v1`` route, one expected status per principal.

A row says how to call its route as a given principal (``build``, which may first create
fresh resources through the ``Cell``) and what each principal must get. ``allow`` writes the
common shape: the allowed principals get the success status; anonymous callers and the end
user's consent token (sent as a bearer) get 401; every other principal gets 403 (among them
the browser still on its one-time password); a browser without the CSRF token gets 403 on
every unsafe method. Whatever a row says, the technician's all-scopes token gets what the
technician gets, and the revoked and the disabled admin's tokens get what anonymous gets.
Exceptions are spelled out per row.

Principals are described in ``tests.authz.world``. Consent routes take the link token (or
the short code) as their only credential: the end user calls them with the real one; every
other principal calls them with its own credentials and a link token (or code) it made up,
and must learn nothing (404), whatever else it holds.

``bugs`` marks cells whose current behaviour is wrong: the row states the status the cell
SHOULD have and the test is ``xfail(strict=True)`` with the reason, so the bug stays visible
and the mark must go once it is fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent import __version__ as AGENT_VERSION
from tests.authz import calls as c
from tests.authz.world import END_USER_NAME, ONE_TIME, PRINCIPALS, UNSAFE


@dataclass(frozen=True)
class Row:
    method: str  # an HTTP method, or "WS"
    route: str  # the route's path template as the app registers it
    build: c.Build
    expect: Mapping[str, int]
    check: c.Check | None = None
    bugs: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"


ADMIN = frozenset({"admin", "admin-cookie", "admin-cookie-no-csrf"})
# Callers who pass authentication and the one-time-password gate
SIGNED_IN = frozenset(PRINCIPALS) - {
    "end-user",
    "anonymous",
    "admin-revoked-token",
    "disabled-admin",
    ONE_TIME,
}
TECH = frozenset({"technician"})
AUDITOR = frozenset({"auditor"})
# the world group's supervisor (docs/OVERSIGHT.md)
SUPERVISOR = frozenset({"supervisor"})
# devices:read and sessions:read: admins, technicians, auditors, supervisors (not narrow or
# system tokens)
STAFF = ADMIN | {"technician", "other-technician", "colleague", "auditor"} | SUPERVISOR
# tickets:write on system A's tickets (system B's token is refused: 403)
TICKET_WRITERS = ADMIN | {"technician", "other-technician", "colleague", "system-a"}


def allow(method: str, ok: int, who: Iterable[str], **special: int) -> dict[str, int]:
    """The expected status of every principal; ``special`` overrides (``other_technician``)."""
    allowed = frozenset(who)
    expect: dict[str, int] = {}
    for name in PRINCIPALS:
        if name in allowed:
            expect[name] = ok
        elif name in ("anonymous", "end-user"):
            expect[name] = 401
        else:
            expect[name] = 403
    if method in UNSAFE:
        expect["admin-cookie-no-csrf"] = 403
    return _special(expect, special)


def everyone(ok: int, **special: int) -> dict[str, int]:
    return _special(dict.fromkeys(PRINCIPALS, ok), special)


def _special(expect: dict[str, int], special: Mapping[str, int]) -> dict[str, int]:
    for name, status in special.items():
        expect[name.replace("_", "-")] = status
    # A token with every scope is still its owner's role; a revoked token, or one whose
    # owner is disabled, is no credential.
    if "tech_all_scopes" not in special:
        expect["tech-all-scopes"] = expect["technician"]
    for dead in ("admin-revoked-token", "disabled-admin"):
        if dead.replace("-", "_") not in special:
            expect[dead] = expect["anonymous"]
    return expect


# --- the table -------------------------------------------------------------------------------

# The gateway's WebSockets: authorised callers get through the ticket check
# and the session check; the device's agent is not connected in this world, so the answer
# they get is the provider error (502) that follows authorisation.
WS_OK = 502

ROWS: tuple[Row, ...] = (
    # auth: log in is public (the credential is in the body)
    Row("POST", f"{c.V1}/auth/login", c.login, everyone(200)),
    # logging out ends a browser session; a bearer token is told to revoke the token instead
    Row(
        "POST",
        f"{c.V1}/auth/logout",
        c.logout,
        allow("POST", 422, SIGNED_IN, admin_cookie=204, admin_one_time_password=204),
    ),
    Row(
        "GET",
        f"{c.V1}/auth/me",
        c.fixed("GET", f"{c.V1}/auth/me"),
        allow("GET", 200, SIGNED_IN | {ONE_TIME}),
        check=c.check_me,
    ),
    # only a logged-in user changes their own password; tokens are refused
    Row(
        "POST",
        f"{c.V1}/auth/password",
        c.password,
        allow("POST", 200, {"admin-cookie", ONE_TIME}),
    ),
    Row("GET", f"{c.V1}/users", c.fixed("GET", f"{c.V1}/users"), allow("GET", 200, ADMIN)),
    Row("POST", f"{c.V1}/users", c.create_user, allow("POST", 201, ADMIN)),
    Row("GET", f"{c.V1}/users/{{user_id}}", c.get_user, allow("GET", 200, ADMIN)),
    Row("PATCH", f"{c.V1}/users/{{user_id}}", c.patch_user, allow("PATCH", 200, ADMIN)),
    Row(
        "POST",
        f"{c.V1}/users/{{user_id}}/reset-password",
        c.reset_password,
        allow("POST", 200, ADMIN),
    ),
    Row("POST", f"{c.V1}/users/{{user_id}}/unlock", c.unlock_user, allow("POST", 200, ADMIN)),
    Row("GET", f"{c.V1}/tokens", c.fixed("GET", f"{c.V1}/tokens"), allow("GET", 200, ADMIN)),
    Row("POST", f"{c.V1}/tokens", c.create_token, allow("POST", 201, ADMIN)),
    Row("DELETE", f"{c.V1}/tokens/{{token_id}}", c.revoke_token, allow("DELETE", 200, ADMIN)),
    # tickets: every signed-in principal reads; system B's token never reaches system A's
    Row("POST", f"{c.V1}/tickets", c.create_ticket, allow("POST", 201, TICKET_WRITERS)),
    Row(
        "GET",
        f"{c.V1}/tickets",
        c.list_tickets,
        allow("GET", 200, SIGNED_IN - {"system-b"}),
        check=c.check_tickets,
    ),
    Row(
        "GET",
        f"{c.V1}/tickets/{{system}}/{{external_id:path}}",
        c.fixed("GET", c.TICKET_PATH),
        allow("GET", 200, SIGNED_IN - {"system-b"}),
    ),
    Row(
        "PATCH",
        f"{c.V1}/tickets/{{system}}/{{external_id:path}}",
        c.fixed("PATCH", c.TICKET_PATH, json={"assignee": "Tom"}),
        allow("PATCH", 200, TICKET_WRITERS),
    ),
    # devices: staff read (technicians only their groups'), admins change
    Row(
        "GET",
        f"{c.V1}/device-groups",
        c.fixed("GET", f"{c.V1}/device-groups"),
        allow("GET", 200, STAFF),
        check=c.check_groups,
    ),
    Row("POST", f"{c.V1}/device-groups", c.create_group, allow("POST", 201, ADMIN)),
    Row(
        "GET",
        f"{c.V1}/device-groups/{{group_id}}",
        c.group,
        allow("GET", 200, STAFF - {"other-technician"}),
    ),
    Row("PATCH", f"{c.V1}/device-groups/{{group_id}}", c.patch_group, allow("PATCH", 200, ADMIN)),
    Row(
        "PUT",
        f"{c.V1}/device-groups/{{group_id}}/members/{{user_id}}",
        c.add_member,
        allow("PUT", 200, ADMIN),
    ),
    Row(
        "DELETE",
        f"{c.V1}/device-groups/{{group_id}}/members/{{user_id}}",
        c.remove_member,
        allow("DELETE", 204, ADMIN),
    ),
    Row("GET", f"{c.V1}/devices", c.list_devices, allow("GET", 200, STAFF), check=c.check_devices),
    Row(
        "GET",
        f"{c.V1}/device-names",
        c.device_names,
        allow("GET", 200, STAFF),
        check=c.check_device_names,
    ),
    Row("POST", f"{c.V1}/devices", c.create_device, allow("POST", 201, ADMIN)),
    Row(
        "GET",
        f"{c.V1}/devices/{{device_id}}",
        c.device,
        allow("GET", 200, STAFF - {"other-technician"}),
    ),
    Row("PATCH", f"{c.V1}/devices/{{device_id}}", c.patch_device, allow("PATCH", 200, ADMIN)),
    Row("DELETE", f"{c.V1}/devices/{{device_id}}", c.delete_device, allow("DELETE", 204, ADMIN)),
    Row(
        "POST",
        f"{c.V1}/devices/{{device_id}}/retire",
        c.retire_device,
        allow("POST", 200, ADMIN),
    ),
    # sessions: technicians request and drive their own; admins end and revoke anyone's
    # a colleague in the group may open their own session on the device
    Row("POST", f"{c.V1}/sessions", c.create_session, allow("POST", 201, TECH | {"colleague"})),
    Row(
        "GET",
        f"{c.V1}/sessions",
        c.list_sessions,
        allow("GET", 200, STAFF),
        check=c.check_sessions,
    ),
    # the live queue: supervisors (their groups) and admins (every group)
    Row(
        "GET",
        f"{c.V1}/sessions/queue",
        c.fixed("GET", f"{c.V1}/sessions/queue"),
        allow("GET", 200, ADMIN | SUPERVISOR),
        check=c.check_queue,
    ),
    # second approval: another technician of the group (colleague) or its supervisor; never
    # the requester; admins and auditors are no second person
    Row(
        "GET",
        f"{c.V1}/sessions/approvals",
        c.fixed("GET", f"{c.V1}/sessions/approvals"),
        allow("GET", 200, TECH | {"other-technician", "colleague"} | SUPERVISOR),
    ),
    Row(
        "GET",
        f"{c.V1}/sessions/{{session_id}}/approval",
        c.second_approval("GET"),
        allow("GET", 200, {"colleague"} | SUPERVISOR),
    ),
    Row(
        "POST",
        f"{c.V1}/sessions/{{session_id}}/approval",
        c.second_approval("POST"),
        allow("POST", 200, {"colleague"} | SUPERVISOR),
    ),
    Row(
        "GET",
        f"{c.V1}/sessions/{{session_id}}",
        c.session,
        allow("GET", 200, STAFF - {"other-technician", "colleague"}),
    ),
    Row(
        "POST",
        f"{c.V1}/sessions/{{session_id}}/start",
        c.act("start", "approved"),
        allow("POST", 200, TECH),
    ),
    Row(
        "POST",
        f"{c.V1}/sessions/{{session_id}}/end",
        c.act("end", "active"),
        allow("POST", 200, TECH | ADMIN | SUPERVISOR),
    ),
    Row(
        "POST",
        f"{c.V1}/sessions/{{session_id}}/cancel",
        c.act("cancel", "awaiting_consent"),
        allow("POST", 200, TECH),
    ),
    Row(
        "POST",
        f"{c.V1}/sessions/{{session_id}}/revoke",
        c.act("revoke", "awaiting_consent"),
        allow("POST", 200, ADMIN | SUPERVISOR),
    ),
    # consent: the end user's link token (or code) opens it; nothing else does
    Row("POST", f"{c.V1}/consent/lookup", c.lookup, everyone(404, end_user=200)),
    Row("GET", f"{c.V1}/consent/{{token}}", c.consent("", "", None), everyone(404, end_user=200)),
    Row(
        "POST",
        f"{c.V1}/consent/{{token}}/decision",
        c.consent("decision", "awaiting_consent", {"decision": "approve", "name": END_USER_NAME}),
        everyone(404, end_user=200),
    ),
    Row(
        "POST",
        f"{c.V1}/consent/{{token}}/revoke",
        c.consent("revoke", "active", {"name": END_USER_NAME}),
        everyone(404, end_user=200),
    ),
    Row(
        "POST",
        f"{c.V1}/consent/{{token}}/rating",
        c.consent("rating", "ended", {"score": 5, "comment": "quick and friendly"}),
        everyone(404, end_user=200),
    ),
    # history: the end user's history link (made from their consent request) opens it
    Row("GET", f"{c.V1}/history/{{token}}", c.history(receipt=False), everyone(404, end_user=200)),
    Row(
        "GET",
        f"{c.V1}/history/{{token}}/receipts/{{session_id}}",
        c.history(receipt=True),
        everyone(404, end_user=200),
    ),
    # audit: auditors read; erasure is an admin's; the verifier key is public
    Row(
        "GET",
        f"{c.V1}/audit/tickets/{{system}}/{{external_id}}/events",
        c.fixed("GET", f"{c.AUDIT_TICKET}/events"),
        allow("GET", 200, AUDITOR),
    ),
    Row(
        "POST",
        f"{c.V1}/audit/tickets/{{system}}/{{external_id}}/bundle",
        c.fixed("POST", f"{c.AUDIT_TICKET}/bundle", json={"reason": "quarterly review"}),
        allow("POST", 200, AUDITOR),
    ),
    # dual-control playback: auditors ask, list and decide (a different auditor's request)
    Row(
        "POST",
        f"{c.V1}/audit/playback-requests",
        c.playback_ask,
        allow("POST", 201, AUDITOR),
    ),
    Row(
        "GET",
        f"{c.V1}/audit/playback-requests",
        c.fixed("GET", f"{c.V1}/audit/playback-requests"),
        allow("GET", 200, AUDITOR),
    ),
    Row(
        "POST",
        f"{c.V1}/audit/playback-requests/{{request_id}}/decision",
        c.playback_decide,
        allow("POST", 200, AUDITOR),
    ),
    # a ticket's own dual control: auditors switch it on, admins on or off
    Row(
        "PUT",
        f"{c.V1}/audit/tickets/{{system}}/{{external_id}}/dual-control",
        c.dual_control,
        allow("PUT", 200, AUDITOR | ADMIN),
    ),
    Row(
        "POST",
        f"{c.V1}/audit/tickets/{{system}}/{{external_id}}/erase",
        c.erase,
        allow("POST", 200, ADMIN),
    ),
    Row(
        "GET",
        f"{c.V1}/audit/verify",
        c.fixed("GET", f"{c.V1}/audit/verify"),
        allow("GET", 200, AUDITOR),
    ),
    Row(
        "GET",
        f"{c.V1}/audit/checkpoint",
        c.fixed("GET", f"{c.V1}/audit/checkpoint"),
        allow("GET", 200, AUDITOR),
    ),
    Row(
        "GET",
        f"{c.V1}/audit/system/events",
        c.fixed("GET", f"{c.V1}/audit/system/events"),
        allow("GET", 200, AUDITOR),
    ),
    Row(
        "GET",
        f"{c.V1}/audit/checkpoints/{{size}}",
        c.checkpoint_by_size,
        allow("GET", 200, AUDITOR),
    ),
    Row("GET", f"{c.V1}/audit/consistency", c.consistency, allow("GET", 200, AUDITOR)),
    Row(
        "GET", f"{c.V1}/audit/public-key", c.fixed("GET", f"{c.V1}/audit/public-key"), everyone(200)
    ),
    # the agent's wheel: public (a device holds no credential before it enrolls)
    Row(
        "GET",
        f"{c.V1}/agent/dist/{{filename}}",
        c.fixed("GET", f"{c.V1}/agent/dist/supportbroker_agent-{AGENT_VERSION}-py3-none-any.whl"),
        everyone(200),
    ),
    # connectors: the webhook's credential is its signature, not a token
    Row(
        "POST",
        f"{c.V1}/connectors/{{system}}/webhook",
        c.webhook,
        everyone(401, system_a=200),
    ),
    Row(
        "GET", f"{c.V1}/connectors", c.fixed("GET", f"{c.V1}/connectors"), allow("GET", 200, ADMIN)
    ),
    Row(
        "GET",
        f"{c.V1}/connectors/rejected",
        c.fixed("GET", f"{c.V1}/connectors/rejected"),
        allow("GET", 200, ADMIN),
    ),
    # the built-in agent's gateway
    Row(
        "POST",
        f"{c.V1}/agent/enrollment-tokens",
        c.fixed("POST", f"{c.V1}/agent/enrollment-tokens", json={"group": "authz-spare"}),
        allow("POST", 201, ADMIN),
    ),
    Row(
        "POST",
        f"{c.V1}/gateway/sessions/{{session_id}}/terminal-ticket",
        c.terminal_ticket,
        allow("POST", 200, TECH | ADMIN | SUPERVISOR),
    ),
    Row(
        "GET",
        f"{c.V1}/sessions/{{session_id}}/recordings",
        c.recordings,
        allow("GET", 200, AUDITOR),
    ),
    Row(
        "POST",
        f"{c.V1}/gateway/sessions/{{session_id}}/replay",
        c.replay,
        allow("POST", 200, AUDITOR),
    ),
    # file transfer: only the session's technician, and only on a session approved for
    # files; the shared session is approved for the screen, so even he is refused (403)
    *(
        Row(
            method,
            f"{c.V1}/gateway/sessions/{{session_id}}/files{suffix}",
            c.files(suffix.replace("{transfer_id}", "0" * 32), method),
            allow(method, 403, ()),
        )
        for method, suffix in (
            ("GET", ""),
            ("GET", "/content"),
            ("PUT", "/content"),
            ("GET", "/transfers/{transfer_id}"),
        )
    ),
    # a kept file: auditors only (the shared session moved no file: 404 for them)
    Row(
        "POST",
        f"{c.V1}/gateway/sessions/{{session_id}}/files/kept/{{transfer_id}}",
        c.kept_file,
        allow("POST", 404, AUDITOR),
    ),
    # WebSockets: the one-time ticket is the credential; a made-up one is 401
    Row(
        "WS",
        f"{c.V1}/gateway/terminal",
        c.socket("/gateway/terminal"),
        everyone(401, technician=WS_OK, admin=WS_OK, admin_cookie=WS_OK, supervisor=WS_OK),
        check=c.check_socket,
    ),
    Row(
        "WS",
        f"{c.V1}/gateway/desktop",
        c.socket("/gateway/desktop"),
        everyone(401, technician=WS_OK, admin=WS_OK, admin_cookie=WS_OK, supervisor=WS_OK),
        check=c.check_socket,
    ),
    Row(
        "WS",
        f"{c.V1}/gateway/forward",
        c.socket("/gateway/forward", port="22"),
        everyone(401, technician=WS_OK, admin=WS_OK, admin_cookie=WS_OK, supervisor=WS_OK),
        check=c.check_forward,
    ),
    # The replicas' peer socket: only a live replica's signed grant opens it, never a
    # caller's credential (a made-up grant: 401 for everyone)
    Row("WS", f"{c.V1}/gateway/peer/{{channel}}", c.peer_socket, everyone(401)),
    *(
        Row(
            method,
            f"{c.V1}/gateway/peer/sessions/{{session_id}}/files{suffix}",
            c.peer_files(suffix.replace("{transfer_id}", "0" * 32), method),
            everyone(401),
        )
        for method, suffix in (
            ("GET", ""),
            ("GET", "/content"),
            ("PUT", "/content"),
            ("GET", "/transfers/{transfer_id}"),
        )
    ),
)


# --- the edit loop's sample ------------------------------------------------------------------

# Principals the matrix expects to behave alike unless a row says otherwise: each class is one
# kind of caller (a role, a narrow token, a ticket system, no credential at all).
CLASSES: tuple[tuple[str, ...], ...] = (
    ("admin", "admin-cookie", "admin-cookie-no-csrf"),
    (ONE_TIME,),
    ("technician", "tech-all-scopes", "colleague", "other-technician"),
    ("auditor",),
    ("supervisor",),
    ("admin-tickets-read", "tech-tickets-read"),
    ("system-a", "system-b"),
    ("anonymous", "end-user", "admin-revoked-token", "disabled-admin"),
)


def sampled(index: int, row: Row) -> frozenset[str]:
    """The principals of row ``index`` that ``make test-fast`` runs (``make test`` runs them
    all): in each class, one caller per status the row expects of that class (so a class
    whose members answer differently, such as a technician in the group and one outside it,
    keeps each answer), taken in turn by the row's index so that across the table every
    principal is called; and every cell marked as a bug. Deterministic: the same cells on
    every run."""
    chosen = set(row.bugs)
    for members in CLASSES:
        by_status: dict[int, list[str]] = {}
        for name in members:
            by_status.setdefault(row.expect[name], []).append(name)
        for alike in by_status.values():
            chosen.add(alike[index % len(alike)])
    return frozenset(chosen)
