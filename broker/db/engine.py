"""Async engine creation for SQLite (WAL, inline statements, a FIFO of writers) and PostgreSQL."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from broker.db import sqlite


def _prepare_sqlite_path(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the engine. On SQLite, statements run inline and writers queue in arrival
    order (:mod:`broker.db.sqlite`): a transaction reads in its own snapshot and becomes a
    writer (``BEGIN IMMEDIATE``, after the process's FIFO write gate) at its first write or
    ``SELECT ... FOR UPDATE``. The concurrency limit and single-winner consent hold as on
    PostgreSQL: the rules lock a row (``FOR UPDATE``) or compare-and-set.
    """
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
        path = make_url(url).database or ":memory:"
        engine = create_async_engine(url, echo=echo, async_creator=partial(sqlite.connect, path))
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")  # deferred: reads first, the writer role later

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _for_update(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            # SQLite has no FOR UPDATE: a query that asks for it becomes the write step.
            compiled = getattr(context, "compiled", None)
            if getattr(getattr(compiled, "statement", None), "_for_update_arg", None) is not None:
                conn.connection.driver_connection.want_write = True

        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True)


def create_sessionmaker(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions carry ``info`` (the audit log, the settings) to the services that use them."""
    from broker.db.session import BrokerSession

    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        autoflush=True,
        info=info or {},
        sync_session_class=BrokerSession,
    )
