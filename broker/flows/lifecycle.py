"""What a session's move causes: every reaction, in order, in this one file.

:func:`broker.sessions.transitions.transition` changes a session's state with one
compare-and-set, seals ``session.<state>`` and publishes the move here, once, whoever moved
it (a person, the deadline sweep, a webhook, the gateway). The reactions come in two
ordered lists:

:data:`IN_TRANSACTION`, for each move, in the mover's transaction (they commit with the move,
or not at all):

1. the ticket's comment, an outbox row (asked, decided, started, ended);
2. leaving approved/active for an end marks the provider's access as owed back;
3. on an end, the evidence digest comment (the checkpoint that covers it);
4. on the end of an unattended session that ran, the device owner's mail, an outbox row
   (``broker.flows.history``; broker.notices delivers it);
5. the transitions counter (metrics).

:data:`AFTER_COMMIT`, once per commit with that commit's moves, holding no transaction
(nothing here keeps the database locked while another system answers):

1. wake the gateway (its poller tells the agents; waiting technician sockets re-read);
2. an approval: ask the provider for the access, then seal ``provider.prepared``, or
   ``provider.prepare_failed`` and the session's failure, in a short transaction;
3. an end: ask the provider to withdraw the access, then seal ``provider.ended`` (or
   ``provider.end_pending``, retried).

A move into ``awaiting_approval`` (a second person must approve first, docs/OVERSIGHT.md)
causes nothing but the counter and the gateway's wake-up: no comment, no prompt on the
device; the ticket's request comment is written when it moves on to ``awaiting_consent``.

So the log reads cause before effect: ``consent.decided``, ``session.approved``,
``provider.prepared``. What the after-commit list owes is on record before it runs (an
approved session without its link, a link marked ``end_pending``): after a crash the
background jobs pay it (:func:`grant_owed`, ``providers.retry_pending_ends``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import after_commit, commit
from broker.db.base import utcnow
from broker.flows.comments import comment_on_ticket, seal_digest
from broker.flows.history import notify_owner
from broker.gateway.signals import notify_replicas, wake_gateways
from broker.metrics import SESSION_TRANSITIONS
from broker.providers import service as providers
from broker.providers.context import provider_actor
from broker.sessions import service as sessions
from broker.sessions.states import TERMINAL, SessionState
from broker.sessions.transitions import Move

S = SessionState
log = structlog.get_logger("broker.flows")
InTransaction = Callable[[AsyncSession, Move], Awaitable[None]]
AfterCommit = Callable[[AsyncSession, Sequence[Move]], Awaitable[None]]
# Leaving these for an end withdraws what the provider granted on approval.
GRANTED = frozenset({S.approved, S.active})
# An approval whose grant has not shown up after this long is granted by the background job
# (the request that approved it died between its commit and the provider's answer).
GRANT_GRACE = timedelta(minutes=1)


async def owe_provider_withdrawal(db: AsyncSession, move: Move) -> None:
    if move.target in TERMINAL and move.source in GRANTED:
        await providers.owe_end(db, move.record.session)


async def count(db: AsyncSession, move: Move) -> None:
    SESSION_TRANSITIONS.labels(source=move.source.value, target=move.target.value).inc()


async def signal_replicas(db: AsyncSession, move: Move) -> None:
    await notify_replicas(db)  # delivered on commit, to the gateways of every replica


async def signal_gateway(db: AsyncSession, moves: Sequence[Move]) -> None:
    wake_gateways()


async def grant_provider_access(db: AsyncSession, moves: Sequence[Move]) -> None:
    for move in moves:
        if move.target is S.approved:
            await grant(db, move.record.session.id)


async def withdraw_provider_access(db: AsyncSession, moves: Sequence[Move]) -> None:
    for move in moves:
        if move.target in TERMINAL and move.source in GRANTED:
            await providers.withdraw(db, move.record.session.id)


IN_TRANSACTION: tuple[InTransaction, ...] = (
    comment_on_ticket,
    owe_provider_withdrawal,
    seal_digest,
    notify_owner,
    count,
    signal_replicas,
)
AFTER_COMMIT: tuple[AfterCommit, ...] = (
    signal_gateway,
    grant_provider_access,
    withdraw_provider_access,
)


class SessionLifecycle:
    """Runs the two lists (the sessions domain knows it as ``transitions.Lifecycle``)."""

    async def moved(self, db: AsyncSession, move: Move) -> None:
        for react in IN_TRANSACTION:
            await react(db, move)
        after_commit(db, self.committed, move)

    async def committed(self, db: AsyncSession, moves: list[Move]) -> None:
        for react in AFTER_COMMIT:
            await react(db, moves)


LIFECYCLE = SessionLifecycle()


async def grant(db: AsyncSession, session_id: str) -> None:
    """Grant an approved session's provider access, outside any transaction; a provider
    that cannot moves the session on to ``failed`` (audited, with the provider's reason)
    instead of leaving an approval nobody can use."""
    outcome = await providers.grant(db, session_id)
    if outcome.problem is not None:
        actor = provider_actor(outcome.provider)
        await sessions.fail_if_running(db, session_id, actor=actor, why=outcome.problem)
    await commit(db)
    if outcome.withdraw:  # the session ended while the provider was granting it
        await providers.withdraw(db, session_id)


async def grant_owed(maker: async_sessionmaker[AsyncSession]) -> int:
    """The background job: grant what approvals committed before a crash never got."""
    owed = await providers.owed_grants(maker, before=utcnow() - GRANT_GRACE)
    for session_id in owed:
        async with maker() as db:
            log.info("flows.grant_owed", session_id=session_id)
            await grant(db, session_id)
    return len(owed)
