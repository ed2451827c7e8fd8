"""Prometheus metrics: requests, sessions by state and their transitions, consent decisions.

Plain counters and gauges: what they count is decided where it happens (the session
lifecycle counts transitions, the consent service decisions, ``/metrics`` sets the gauge).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "supportbroker_http_requests_total",
    "HTTP requests by method and status",
    ["method", "status"],
    registry=REGISTRY,
)
SESSIONS_BY_STATE = Gauge(
    "supportbroker_sessions", "Sessions by state", ["state"], registry=REGISTRY
)
SESSION_TRANSITIONS = Counter(
    "supportbroker_session_transitions_total",
    "Session state changes by from and to state",
    ["source", "target"],
    registry=REGISTRY,
)
CONSENT_DECISIONS = Counter(
    "supportbroker_consent_decisions_total",
    "Consent decisions by outcome",
    ["decision"],
    registry=REGISTRY,
)
# Export every outcome from the start (at 0), so a dashboard sees the series before the
# first decision instead of "no data".
for _outcome in ("approve", "deny", "unattended"):
    CONSENT_DECISIONS.labels(decision=_outcome)


def set_sessions_by_state(counts: Mapping[str, int]) -> None:
    """The current number of sessions in each state (every state named, 0s included)."""
    for state, n in counts.items():
        SESSIONS_BY_STATE.labels(state=state).set(n)
