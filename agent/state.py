"""What the local user approved, per session: the agent's own source of truth for rights.

The broker's word is not enough: every channel is checked here against the decision the
user made on this device (or, unattended, the group policy the broker sent at connect).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.errors import CapabilityDeniedError

# A port forward needs its own right: "control" (mouse and keyboard) does not include it.
FORWARD_CAPS = frozenset({"forward"})


@dataclass
class Grant:
    session_id: str
    capabilities: frozenset[str]
    until: float  # monotonic deadline
    unattended: bool = False
    closers: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Policy:
    allowed_ports: frozenset[int] = frozenset()
    allowed_paths: tuple[str, ...] = ()
    unattended_allowed: bool = False

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Policy:
        return cls(
            allowed_ports=frozenset(int(p) for p in msg.get("allowed_ports", [])),
            allowed_paths=tuple(str(p) for p in msg.get("allowed_paths", [])),
            unattended_allowed=bool(msg.get("unattended_allowed", False)),
        )


class Grants:
    def __init__(self) -> None:
        self.policy = Policy()
        self._grants: dict[str, Grant] = {}

    def add(self, grant: Grant) -> None:
        self._grants[grant.session_id] = grant

    def active(self) -> list[Grant]:
        now = time.monotonic()
        return [g for g in self._grants.values() if g.until > now]

    def drop(self, session_id: str) -> Grant | None:
        grant = self._grants.pop(session_id, None)
        if grant is not None:
            for close in grant.closers:
                close()
        return grant

    def require(self, session_id: str, capabilities: frozenset[str]) -> Grant:
        """The grant for ``session_id`` if it holds one of ``capabilities``; else refuse."""
        grant = self._grants.get(session_id)
        if grant is None:
            raise CapabilityDeniedError(f"session {session_id} was not approved on this device")
        if grant.until <= time.monotonic():
            self.drop(session_id)
            raise CapabilityDeniedError(f"session {session_id} is past its time limit")
        if not grant.capabilities & capabilities:
            raise CapabilityDeniedError(
                f"session {session_id} was not approved for {'/'.join(sorted(capabilities))}"
            )
        return grant

    def require_port(self, port: int) -> None:
        if port not in self.policy.allowed_ports:
            raise CapabilityDeniedError(f"port {port} is not allowed for this device group")
