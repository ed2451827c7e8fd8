"""The session state machine, exactly as in docs/PRODUCT.md; nothing else may change a state.

``requested → (awaiting_approval, when the device group's policy asks a second person) →
awaiting_consent → approved → active → ended`` with ``denied``, ``expired``, ``revoked`` and
``failed`` as terminal branches.
"""

from __future__ import annotations

from enum import StrEnum


class SessionState(StrEnum):
    requested = "requested"
    awaiting_approval = "awaiting_approval"
    awaiting_consent = "awaiting_consent"
    approved = "approved"
    active = "active"
    ended = "ended"
    denied = "denied"
    expired = "expired"
    revoked = "revoked"
    failed = "failed"


S = SessionState

TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.requested: frozenset({S.awaiting_approval, S.awaiting_consent, S.failed}),
    # A second person approves (→ awaiting consent) or denies; unanswered it expires.
    S.awaiting_approval: frozenset({S.awaiting_consent, S.denied, S.expired, S.revoked, S.failed}),
    # revoked here: the technician withdraws the request or the ticket closed.
    S.awaiting_consent: frozenset({S.approved, S.denied, S.expired, S.revoked, S.failed}),
    # expired here: the approved window ran out before anyone connected.
    S.approved: frozenset({S.active, S.revoked, S.expired, S.failed}),
    S.active: frozenset({S.ended, S.revoked, S.failed}),
    S.ended: frozenset(),
    S.denied: frozenset(),
    S.expired: frozenset(),
    S.revoked: frozenset(),
    S.failed: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
# States that count against a technician's concurrent-session limit.
OPEN_STATES = frozenset(
    {S.requested, S.awaiting_approval, S.awaiting_consent, S.approved, S.active}
)


def can_transition(current: SessionState, target: SessionState) -> bool:
    return target in TRANSITIONS[current]


class Capability(StrEnum):
    """One right each: a provider gives some of them (``broker.providers.offers``)."""

    view = "view"  # see the screen
    control = "control"  # mouse and keyboard
    shell = "shell"  # a terminal
    files = "files"  # file transfer
    forward = "forward"  # a TCP port forward to the device (VNC, RDP, a web console...)
