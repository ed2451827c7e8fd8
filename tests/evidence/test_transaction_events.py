"""One audit append per transaction, checkpoints on a cadence, the digest taken at delivery,
and the whole-log verification whose last result is kept. SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from audit import schema
from audit.appender import Appended
from audit.store import AuditLog
from broker.app import create_app
from broker.config import Settings
from broker.evidence import digest, verification
from broker.evidence.checkpoints import sign_if_due
from broker.evidence.events import EventType as E
from broker.evidence.service import SYSTEM_ACTOR, audit_log_of, flush_events, record_event
from tests.factories import Desk, audit_events, open_session, request_session


class CountingAuditLog(AuditLog):
    """The real log, counting appends and what they carry."""

    def __init__(self, real: AuditLog) -> None:
        super().__init__(
            log_id=real.log_id, keys=real.keys, signer=real.signer, publisher=real.publisher
        )
        self.batches: list[list[str]] = []
        self.signed: list[bool] = []

    async def append(self, conn: Any, events: Any, **kw: Any) -> list[Appended]:
        self.batches.append([e.event_type for e in getattr(events, "events", events)])
        self.signed.append(kw.get("sign", True))
        return await super().append(conn, events, **kw)


@pytest.fixture
def counting(app: Any) -> Any:
    info = app.state.sessionmaker.kw["info"]
    real = info["audit_log"]
    info["audit_log"] = counted = CountingAuditLog(real)
    yield counted
    info["audit_log"] = real


async def checkpoint_sizes(app: Any) -> list[int]:
    async with app.state.sessionmaker() as db:
        rows = await db.execute(select(schema.checkpoints.c.size).order_by("size"))
        return [int(s) for (s,) in rows]


async def test_a_request_is_one_unsigned_append(
    client: httpx.AsyncClient, desk: Desk, counting: CountingAuditLog
) -> None:
    response = await request_session(client, desk)
    assert response.status_code == 201, response.text
    assert len(counting.batches) == 1  # auth, ticket, session, transition, consent: one append
    assert counting.batches[0][0] == "auth.token_used"
    assert {"session.requested", "session.awaiting_consent", "consent.requested"} <= set(
        counting.batches[0]
    )
    assert counting.signed == [False]


async def test_a_rolled_back_savepoint_drops_its_events(app: Any) -> None:
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_updated, ticket="T-1", actor=SYSTEM_ACTOR)
        async with db.begin_nested() as savepoint:
            await record_event(db, E.ticket_closed, ticket="T-1", actor=SYSTEM_ACTOR)
            await savepoint.rollback()
        async with db.begin_nested():
            await record_event(db, E.ticket_reopened, ticket="T-1", actor=SYSTEM_ACTOR)
        await db.commit()
    assert [t for t, _ in await audit_events(app, "T-1")] == [E.ticket_updated, E.ticket_reopened]


async def test_a_rolled_back_transaction_records_nothing(app: Any) -> None:
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_closed, ticket="T-2", actor=SYSTEM_ACTOR)
        await db.rollback()
        await record_event(db, E.ticket_updated, ticket="T-2", actor=SYSTEM_ACTOR)
        await db.commit()
    assert [t for t, _ in await audit_events(app, "T-2")] == [E.ticket_updated]


async def test_a_payload_that_cannot_be_sealed_fails_where_it_is_recorded(app: Any) -> None:
    from broker.errors import AuditFailure

    async with app.state.sessionmaker() as db:
        with pytest.raises(AuditFailure, match=r"ticket\.updated"):
            await record_event(
                db, E.ticket_updated, ticket="T-3", actor=SYSTEM_ACTOR, data={"x": 0.5}
            )


async def test_flush_events_seals_before_commit(app: Any) -> None:
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_updated, ticket="T-4", actor=SYSTEM_ACTOR)
        sealed = await flush_events(db)
        assert [a.stream for a in sealed] == ["T-4"]
        assert await flush_events(db) == []
        await record_event(db, E.ticket_reopened, ticket="T-4", actor=SYSTEM_ACTOR)
        await db.commit()
    assert [t for t, _ in await audit_events(app, "T-4")] == [E.ticket_updated, E.ticket_reopened]


async def test_checkpoints_come_on_the_cadence_and_once(app: Any, desk: Desk) -> None:
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_updated, ticket="T-5", actor=SYSTEM_ACTOR)
        await db.commit()
        size = await audit_log_of(db).size(await db.connection())
    signed = await sign_if_due(app.state.sessionmaker)
    assert signed is not None
    assert signed.size == size
    assert await sign_if_due(app.state.sessionmaker) is None  # nothing new: no second one
    assert (await checkpoint_sizes(app))[-1] == size


async def test_shutdown_signs_the_tail(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"checkpoint_interval_seconds": 3600.0}))
    async with app.router.lifespan_context(app), app.state.sessionmaker() as db:
        await record_event(db, E.ticket_updated, ticket="T-6", actor=SYSTEM_ACTOR)
        await db.commit()
        log = audit_log_of(db)
        assert await log.uncovered(await db.connection()) > 0
    # a new start reads what the last one left
    async with app.router.lifespan_context(app), app.state.sessionmaker() as db:
        assert await audit_log_of(db).uncovered(await db.connection()) == 0


async def test_the_digest_is_the_first_checkpoint_covering_the_end(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    cancelled = await client.post(f"/api/v1/sessions/{created['id']}/cancel", headers=desk.headers)
    assert cancelled.status_code == 200, cancelled.text
    first = await sign_if_due(app.state.sessionmaker)
    assert first is not None
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_updated, ticket="T-7", actor=SYSTEM_ACTOR)
        await db.commit()
    later = await sign_if_due(app.state.sessionmaker)
    assert later is not None
    assert later.size > first.size
    async with app.state.sessionmaker() as db:
        stream = await audit_log_of(db).read_stream(
            await db.connection(),
            f"{created['ticket']['system']}:{created['ticket']['external_id']}",
        )
    end = stream[-1]  # the session's last event: its move to revoked
    assert end.event_type == "session.revoked"
    async with app.state.sessionmaker() as db, db.begin():
        data = await digest.complete(db, {digest.POSITION: end.position, "ticket": "t"})
    assert data is not None
    assert data["tree_size"] == first.size
    assert data["root_hash"] == first.root.hex()


async def test_the_digest_signs_when_no_checkpoint_covers_yet(app: Any) -> None:
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_updated, ticket="T-8", actor=SYSTEM_ACTOR)
        (sealed,) = await flush_events(db)
        await db.commit()
    async with app.state.sessionmaker() as db, db.begin():
        data = await digest.complete(db, {digest.POSITION: sealed.position, "ticket": "T-8"})
        assert data is not None
        assert data["tree_size"] == sealed.position + 1
        assert await digest.complete(db, data) is None  # completed already
        assert await digest.complete(db, {"ticket": "T-8"}) is None  # nothing to cover
        with pytest.raises(ValueError, match="no checkpoint can cover"):
            await digest.complete(db, {digest.POSITION: 10**9})
    assert "Audit evidence sealed for T-8" in digest.placeholder_text("T-8")


async def test_the_digest_takes_a_checkpoint_signed_between_its_read_and_the_lock(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica's cadence tick may sign between the digest's read and its own signing:
    its checkpoint is the digest (it once failed the delivery with "no checkpoint")."""
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_updated, ticket="T-9", actor=SYSTEM_ACTOR)
        (sealed,) = await flush_events(db)
        await db.commit()
    read = digest._first_covering
    ticks: list[Any] = []

    async def stale_read_then_a_tick(db: Any, position: int) -> Any:
        if not ticks:  # the read saw no checkpoint; then the other signer's tick commits
            ticks.append(await audit_log_of(db).sign_checkpoint(await db.connection()))
            return None
        return await read(db, position)

    monkeypatch.setattr(digest, "_first_covering", stale_read_then_a_tick)
    async with app.state.sessionmaker() as db, db.begin():
        data = await digest.complete(db, {digest.POSITION: sealed.position, "ticket": "T-9"})
    assert data is not None
    assert ticks[0] is not None
    assert (data["tree_size"], data["root_hash"]) == (ticks[0].size, ticks[0].root.hex())


async def test_verification_keeps_its_last_result(app: Any, desk: Desk) -> None:
    maker = app.state.sessionmaker
    async with maker() as db:
        assert await verification.last_finished(db) is None
    await sign_if_due(maker)
    task = app.state.verifications.start("request", "auditor-1")
    assert app.state.verifications.start("request") is task  # one run at a time
    row = await task
    assert not app.state.verifications.running()
    async with maker() as db:
        last = await verification.last_finished(db)
        started = await verification.last_started(db)
    assert last is not None
    assert started is not None
    assert last.id == row.id == started.id
    assert last.ok is True
    assert last.trigger == "request"
    assert last.requested_by == "auditor-1"
    assert last.size is not None
    assert last.size > 0
    assert last.covered == last.size
    assert last.verdict is not None
    assert last.verdict.startswith("OK:")


async def test_verification_reports_a_broken_log(app: Any, desk: Desk) -> None:
    maker = app.state.sessionmaker
    await sign_if_due(maker)
    async with app.state.engine.begin() as conn:
        await conn.execute(
            schema.records.update().where(schema.records.c.position == 0).values(event_type="x")
        )
    row = await verification.run(maker, "schedule")
    assert row.ok is False
    assert row.position == 0
    assert row.covered is None
    async with maker() as db:
        count = await db.scalar(select(func.count()).select_from(verification.AuditVerification))
    assert count == 1


async def test_record_proofs_against_the_latest_checkpoint(app: Any) -> None:
    from audit.merkle import verify_consistency, verify_inclusion
    from broker.errors import NotFound, ValidationFailed
    from broker.evidence.proofs import consistency, record_proof

    async with app.state.sessionmaker() as db:
        for i in range(20):
            await record_event(db, E.ticket_updated, ticket="T-9", actor=SYSTEM_ACTOR)
        sealed = await flush_events(db)
        await db.commit()
    first = await sign_if_due(app.state.sessionmaker)
    assert first is not None
    async with app.state.sessionmaker() as db:
        await record_event(db, E.ticket_reopened, ticket="T-9", actor=SYSTEM_ACTOR)
        (tail,) = await flush_events(db)
        await db.commit()
    async with app.state.sessionmaker() as db:
        for appended in (sealed[0], sealed[7], sealed[-1]):
            proof = await record_proof(db, appended.position)
            assert proof.covered
            assert proof.checkpoint is not None
            assert proof.record_id == appended.record_id
            verify_inclusion(
                proof.leaf_hash, proof.position, proof.checkpoint.size, proof.path, first.root
            )
        pending = await record_proof(db, tail.position)
        assert not pending.covered
        assert pending.path == []
        with pytest.raises(NotFound):
            await record_proof(db, 10**9)
        with pytest.raises(ValidationFailed):
            await consistency(db, 0, 3)
    second = await sign_if_due(app.state.sessionmaker)
    assert second is not None
    async with app.state.sessionmaker() as db:
        path = await consistency(db, first.size, second.size)
    verify_consistency(first.size, second.size, first.root, second.root, path)
