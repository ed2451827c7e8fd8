"""Prometheus metrics: requests, sessions by state, consent decisions."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select

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


async def refresh_session_gauge(sessionmaker: Any) -> None:
    from broker.sessions.models import RemoteSession
    from broker.sessions.states import SessionState

    async with sessionmaker() as db:
        rows = await db.execute(
            select(RemoteSession.state, func.count()).group_by(RemoteSession.state)
        )
        counts: dict[str, int] = {str(state): int(n) for state, n in rows.all()}
    for state in SessionState:
        SESSIONS_BY_STATE.labels(state=state.value).set(counts.get(state.value, 0))
