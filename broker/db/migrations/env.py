"""Alembic environment: async engine, broker tables plus the audit library's tables."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from broker.db.engine import create_engine
from broker.db.models import Base

MIGRATION_LOCK = 0x5342_4D49_4752_4154  # "SBMIGRAT": one migrating replica at a time

try:  # the audit library's tables live in the same database
    from audit.schema import metadata as audit_metadata

    target_metadata = [Base.metadata, audit_metadata]
except ImportError:  # pragma: no cover - only while the audit library is being written
    target_metadata = [Base.metadata]


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from broker.config import Settings

    return Settings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas started together (docs/DEPLOY.md) migrate one after the other: the
            # second reads the version the first committed and has nothing left to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
