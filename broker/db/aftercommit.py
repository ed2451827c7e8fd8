"""Work that waits until its transaction has committed: wake-ups and calls to other systems.

Nothing may hold the database across a network call: on SQLite every transaction holds the
one write lock, on PostgreSQL a changed row stays locked until the commit. A service that must
call out because of a change registers the call with :func:`after_commit` inside the
transaction; it runs only once that transaction has committed through :func:`commit` (the
request's ``get_db``, :func:`transaction`, the gateway, the CLI), outside any transaction.

- Work registered inside a savepoint that rolls back is dropped with it; a transaction that
  rolls back, or closes without committing, drops all of its work.
- Work registered with the same ``run`` in one commit runs as one batch (``run(db, items)``,
  items in registration order), so a reaction can act once per commit.
- A batch may use ``db`` for short transactions of its own and commit them with
  :func:`commit`: their own after-commit work runs before the next batch.
- Work is held in memory: whoever registers it keeps a durable record of what is owed (a
  state, a flag), so that a crash between the commit and the work loses nothing (the
  background jobs pay what is still owed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

Run = Callable[[AsyncSession, list[Any]], Awaitable[None]]
_PENDING = "supportbroker.after_commit.pending"  # [(transaction, run, item)], not yet committed
_COMMITTED = "supportbroker.after_commit.committed"  # [(run, item)], committed, not yet run


def after_commit(db: AsyncSession, run: Run, item: Any) -> None:
    """Run ``run(db, [item, ...])`` once the current transaction commits (see the module)."""
    sync = db.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    if transaction is None:
        raise RuntimeError("after_commit needs an open transaction")
    _install()
    sync.info.setdefault(_PENDING, []).append((transaction, run, item))


async def run_committed(db: AsyncSession) -> None:
    """Run the work of the transactions ``db`` has committed, batch by batch."""
    while committed := db.info.pop(_COMMITTED, None):
        batches: dict[Run, list[Any]] = {}
        for run, item in committed:
            batches.setdefault(run, []).append(item)
        for run, items in batches.items():
            await run(db, items)


async def commit(db: AsyncSession) -> None:
    """Commit ``db``'s transaction, then run the work that waited for it."""
    await db.commit()
    await run_committed(db)


@asynccontextmanager
async def transaction(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction on a new session, committed (then its after-commit work run) when the
    block ends; rolled back, work and all, when the block raises."""
    async with maker() as db:
        yield db
        await commit(db)


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


def _committed(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        session.info.setdefault(_COMMITTED, []).extend((run, item) for _, run, item in pending)


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    pending = session.info.get(_PENDING)
    if pending:
        session.info[_PENDING] = [p for p in pending if not _within(p[0], previous)]


def _ended(session: Session, transaction: SessionTransaction) -> None:
    # ``after_commit`` has already taken what committed: whatever is left did not.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _install() -> None:
    """Listen on every ORM session of the process, once (idempotent)."""
    if event.contains(Session, "after_commit", _committed):
        return
    event.listen(Session, "after_commit", _committed)
    event.listen(Session, "after_soft_rollback", _rolled_back)
    event.listen(Session, "after_transaction_end", _ended)
