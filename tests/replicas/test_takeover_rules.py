"""The takeover of a stopped replica's sessions on both databases (broker.replicas.takeover):
who is taken over, what is sealed, and that it happens once; and a cut-off replica's late
disconnect, which must not clear the link its agent made elsewhere. The processes, the kill
and the cut are in test_takeover.py (PostgreSQL, three replicas)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from broker.db.base import utcnow
from broker.gateway.models import AgentKey
from broker.gateway.presence import Presence
from broker.gateway.recording import open_recorder
from broker.gateway.service import mark_presence
from broker.replicas.models import Replica
from broker.replicas.takeover import take_over
from broker.sessions import service as sessions
from tests.factories import Desk, audit_events, open_session, update_session_row

LEASE = timedelta(seconds=20)


async def _running(
    app: Any, client: httpx.AsyncClient, desk: Desk, ticket: str, served_by: str
) -> dict[str, Any]:
    """An active session on ``ticket``, served by ``served_by``."""
    created = await open_session(
        client, desk, ticket={"system": "helpdesk", "external_id": ticket, "subject": "Mail"}
    )
    await update_session_row(
        app, created["id"], state="active", active_at=utcnow(), served_by=served_by
    )
    return created


async def _recording(app: Any, session_id: str, chunks: int) -> str:
    """A terminal recording of the session with ``chunks`` sealed chunks and no end (its
    replica stopped while recording)."""
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, session_id)
    recorder = await open_recorder(
        app.state.audit_log, app.state.engine.begin, record, chunk_seconds=60
    )
    for i in range(chunks):
        await recorder.output(f"line {i}\r\n".encode())
        await recorder.writer.flush()
    return recorder.recording_id


async def _session(app: Any, session_id: str) -> Any:
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, session_id)
    return record.session


async def test_a_stopped_replicas_sessions_fail_with_their_recordings_gapped(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    maker = app.state.sessionmaker
    async with maker() as db, db.begin():
        old = utcnow() - timedelta(minutes=5)
        db.add(Replica(id="gone", address="http://10.0.0.9", started_at=old, heartbeat_at=old))
    mine = app.state.replica.id
    doomed = await _running(app, client, desk, "HD-7001", "gone")
    recording = await _recording(app, doomed["id"], chunks=2)
    kept = await _running(app, client, desk, "HD-7002", mine)
    await _recording(app, kept["id"], chunks=1)

    await take_over(maker, mine, LEASE)

    failed = await _session(app, doomed["id"])
    assert failed.state == "failed"
    assert failed.end_reason == (
        "the broker replica serving it (gone) stopped: its heartbeat ran out"
    )
    assert failed.served_by == mine  # claimed from the dead replica before anything else
    events = await audit_events(app, "helpdesk:HD-7001")
    gaps = [p["data"] for kind, p in events if kind == "recording.gap"]
    assert gaps == [
        {
            "session_id": doomed["id"],
            "recording_id": recording,
            "why": "the recording stopped with the broker replica gone, after chunk 1",
            "replica": "gone",
            "chunks": 2,
            "last_chunk": 1,
        }
    ]
    kinds = [kind for kind, _ in events]
    # Cause before effect: the gap, then the failure; the chunks sealed before stay.
    assert kinds.index("recording.gap") < kinds.index("session.failed")
    assert kinds.count("recording.chunk") == 2
    assert "recording.ended" not in kinds
    # The live replica's session is untouched.
    assert (await _session(app, kept["id"])).state == "active"
    assert not [k for k, _ in await audit_events(app, "helpdesk:HD-7002") if k == "recording.gap"]
    # Nothing is left to take over: a second look (another replica's, say) seals nothing.
    assert await take_over(maker, "someone-else", LEASE) == 0
    assert (
        len([k for k, _ in await audit_events(app, "helpdesk:HD-7001") if k == "recording.gap"])
        == 1
    )


async def test_a_replica_restarted_under_its_id_fails_its_earlier_lifes_sessions(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    maker = app.state.sessionmaker
    mine = app.state.replica.id  # alive: its heartbeat is fresh
    earlier = await _running(app, client, desk, "HD-7003", mine)
    assert await take_over(maker, mine, LEASE) == 0  # alive, so the lease holder leaves it
    assert await take_over(maker, mine, LEASE, stale={mine}) == 1  # at start-up it does not
    gone = await _session(app, earlier["id"])
    assert gone.state == "failed"
    assert f"({mine}) stopped" in (gone.end_reason or "")
    # No recording had started: nothing to close, no gap record.
    assert "recording.gap" not in [k for k, _ in await audit_events(app, "helpdesk:HD-7003")]


async def test_a_late_disconnect_leaves_the_link_another_replica_made(app: Any, desk: Desk) -> None:
    # Replica a was cut off from the database when the agent left it; by the time its
    # disconnect is written the agent is on replica b, and stays recorded there.
    maker = app.state.sessionmaker
    device = desk.device.id
    async with maker() as db, db.begin():
        db.add(AgentKey(device_id=device, fingerprint="SHA256:late", public_key="ssh-ed25519 A"))
    async with maker() as db, db.begin():
        await mark_presence(db, {device: ("b", "10.0.0.2")}, "b")
    async with maker() as db, db.begin():
        await mark_presence(db, {device: (None, "10.0.0.2")}, "a")
    async with maker() as db:
        assert (await db.get(AgentKey, device)).connected_node == "b"  # type: ignore[union-attr]
    async with maker() as db, db.begin():  # b's own disconnect clears it
        await mark_presence(db, {device: (None, "10.0.0.2")}, "b")
    async with maker() as db:
        assert (await db.get(AgentKey, device)).connected_node is None  # type: ignore[union-attr]


async def test_presence_writes_outlive_a_connection_dying_as_it_is_made(
    app: Any, desk: Desk
) -> None:
    # Back from a cut, the first connection to the database may die while being made: a
    # bare ConnectionError, not SQLAlchemy's. The mark is kept and written next round.
    device = desk.device.id
    async with app.state.sessionmaker() as db, db.begin():
        db.add(AgentKey(device_id=device, fingerprint="SHA256:back", public_key="ssh-ed25519 B"))
    tries = []

    def maker() -> Any:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("unexpected connection_lost() call")
        return app.state.sessionmaker()

    presence = Presence(maker, "b")  # type: ignore[arg-type]
    presence.mark(device, "b", "10.0.0.2")
    await presence.flush()
    await presence.flush()
    async with app.state.sessionmaker() as db:
        assert (await db.get(AgentKey, device)).connected_node == "b"  # type: ignore[union-attr]
