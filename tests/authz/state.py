"""A fingerprint of the broker's business tables, to prove that a refused call wrote nothing.

Audit tables are left out (refusals are audited on purpose), and so are the columns a merely
authenticated request touches (``api_tokens.last_used_at``) and the throttles' counters.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from broker.db import models  # noqa: F401 - registers every table on the metadata
from broker.db.base import Base

TABLES = (
    "users",
    "api_tokens",
    "web_sessions",
    "user_totp",
    "device_groups",
    "group_members",
    "devices",
    "agent_enrollment_tokens",
    "tickets",
    "sessions",
    "consent_requests",
    "provider_session_links",
    "connector_outbox",
)
VOLATILE = {("api_tokens", "last_used_at")}


async def fingerprint(app: Any) -> dict[str, list[tuple[Any, ...]]]:
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with app.state.sessionmaker() as db:
        for name in TABLES:
            table = Base.metadata.tables[name]
            columns = [c for c in table.columns if (name, c.name) not in VOLATILE]
            rows = (await db.execute(select(*columns))).all()
            found[name] = sorted((tuple(r) for r in rows), key=repr)
    return found
