"""Verifying a whole log stored in a database, with only the log's public key."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.errors import RollbackDetected, VerificationError
from audit.reader import RECORD_COLUMNS
from audit.verify import LogVerifier, VerifyReport


async def verify_database(
    conn: AsyncConnection,
    verifier: VerifierKey,
    *,
    progress: Callable[[int, int], None] | None = None,
    published: SignedCheckpoint | None = None,
    batch: int = 20_000,
) -> VerifyReport:
    """Verify every record, chain, checkpoint and the tree state; never raises on bad data.

    The log id is the verifier key's name. Rows go to :meth:`LogVerifier.feed_rows` a page
    at a time, as the driver returns them.
    """
    cps = await conn.execute(select(schema.checkpoints.c.size, schema.checkpoints.c.note))
    checker = LogVerifier(verifier.name, verifier, {int(s): n for s, n in cps})
    if published is not None:
        checker.want_root_at(published.size)
    ts = schema.tree_state
    state = (await conn.execute(select(ts.c.size, ts.c.root).where(ts.c.id == 1))).first()
    total = int((await conn.execute(select(func.count()).select_from(schema.records))).scalar_one())
    done = 0
    last = -1
    try:
        while True:
            rows = (
                await conn.execute(
                    select(*RECORD_COLUMNS)
                    .where(schema.records.c.position > last)
                    .order_by(schema.records.c.position)
                    .limit(batch)
                )
            ).all()
            if not rows:
                break
            checker.feed_rows(rows)
            done += len(rows)
            last = int(rows[-1][0])
            if progress is not None:
                progress(done, total)
        return checker.finish(
            None if state is None else int(state[0]),
            None if state is None else bytes(state[1]),
            published,
        )
    except VerificationError as exc:
        return VerifyReport(
            ok=False,
            size=checker.verified,
            problem=str(exc),
            position=exc.position,
            record_id=exc.record_id,
            rolled_back=isinstance(exc, RollbackDetected),
        )
