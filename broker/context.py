"""What a service finds on its database session: the settings and the audit log.

The sessionmaker puts them in ``session.info`` (see broker.app), so services need no globals
and background tasks and the CLI get the same wiring as requests.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from broker.config import Settings


def settings_of(db: AsyncSession) -> Settings:
    settings = db.info.get("settings")
    if not isinstance(settings, Settings):  # pragma: no cover - a wiring mistake
        raise RuntimeError("database session has no settings in session.info")
    return settings
