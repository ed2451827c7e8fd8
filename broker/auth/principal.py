"""The authenticated caller of a request, however it authenticated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from broker.auth.permissions import Scope
from broker.evidence.service import Actor


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "token"]
    role: str
    name: str
    scopes: frozenset[Scope]
    user_id: str | None = None
    token_id: str | None = None
    ticket_system: str | None = None  # set for ticket-system tokens: the only system allowed
    ip: str | None = None
    csrf_token: str | None = None  # set for cookie sessions
    # A browser logged in with a one-time password: only me, password and logout until changed.
    must_change_password: bool = False

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def actor(self) -> Actor:
        if self.kind == "token":
            kind = "ticket_system" if self.ticket_system else "token"
            return Actor(kind=kind, id=self.token_id, name=self.name, role=self.role, ip=self.ip)
        return Actor(kind="user", id=self.user_id, name=self.name, role=self.role, ip=self.ip)
