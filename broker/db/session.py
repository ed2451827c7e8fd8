"""Session-per-request: one transaction per request, committed before the response is sent.

The dependency runs with ``scope="function"`` so its exit (the commit) happens when the
endpoint returns and before FastAPI sends the response: a 2xx is only ever sent for work that
is durable. Errors roll back, except refusals flagged ``keep_changes`` (see broker.errors).
What waited for the commit (:mod:`broker.db.aftercommit`: provider calls, gateway wake-ups)
runs right after it, still before the response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from broker.db.aftercommit import commit
from broker.errors import BrokerError


class BrokerSession(Session):
    """The ORM session class of every broker sessionmaker (requests, background tasks, CLI).

    A class of our own so that domain modules can hook its transaction events without
    touching sessions of other code (``broker.evidence.service`` seals a transaction's audit
    events in ``before_commit``).

    It also keeps the objects it loads alive while it lives: SQLAlchemy's identity map holds
    them weakly, so a row read by the authentication (the token's owner) and dropped was
    read again by the next service that asked ``db.get`` for it (two of the 23 statements
    of a session request). A session lives for one request or one job."""


@event.listens_for(BrokerSession, "loaded_as_persistent")
def _keep_loaded(session: Session, instance: Any) -> None:
    session.info.setdefault("loaded", []).append(instance)


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with maker() as session:
        try:
            yield session
        except BrokerError as exc:
            if exc.keep_changes:
                await commit(session)
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await commit(session)


DbSession = Annotated[AsyncSession, Depends(get_db, scope="function")]
