"""Scopes and what each role is granted. An API token carries a subset of its owner's grants."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    tickets_read = "tickets:read"
    tickets_write = "tickets:write"
    devices_read = "devices:read"
    devices_write = "devices:write"
    sessions_read = "sessions:read"
    sessions_write = "sessions:write"  # request, start and end one's own sessions
    sessions_admin = "sessions:admin"  # end or revoke anyone's session
    # See the live queue of one's device groups, watch, end or revoke there (with a reason)
    # and read those groups' reports: a supervisor, who changes no users, keys or policies.
    sessions_supervise = "sessions:supervise"
    audit_read = "audit:read"
    users_admin = "users:admin"


ALL_SCOPES = frozenset(Scope)

ROLE_GRANTS: dict[str, frozenset[Scope]] = {
    "admin": frozenset(
        {
            Scope.tickets_read,
            Scope.tickets_write,
            Scope.devices_read,
            Scope.devices_write,
            Scope.sessions_read,
            Scope.sessions_admin,
            Scope.users_admin,
        }
    ),
    "technician": frozenset(
        {
            Scope.tickets_read,
            Scope.tickets_write,
            Scope.devices_read,
            Scope.sessions_read,
            Scope.sessions_write,
        }
    ),
    # The auditor reads everything and changes nothing.
    "auditor": frozenset(
        {Scope.tickets_read, Scope.devices_read, Scope.sessions_read, Scope.audit_read}
    ),
    # The supervisor oversees the sessions of their device groups and changes nothing else.
    "supervisor": frozenset(
        {Scope.tickets_read, Scope.devices_read, Scope.sessions_read, Scope.sessions_supervise}
    ),
    # A ticket system's token: only its own tickets.
    "integration": frozenset({Scope.tickets_read, Scope.tickets_write}),
}


def grants_for(role: str) -> frozenset[Scope]:
    return ROLE_GRANTS.get(role, frozenset())
