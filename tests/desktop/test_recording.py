"""Desktop recordings: the technician's screen is sealed into the ticket's chain, fail-closed.

A real X display (Xvfb painted by ``xsetroot``), x11vnc started by the real agent, the broker's
desktop socket and a small RFB viewer (``rfbclient``: Raw pixels, so the recorded bytes can be
checked for the painted colours). The recording path runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import zlib
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import websockets

from audit.bundle import verify_bundle
from broker.errors import NotFound
from broker.gateway.desktop_recording import DesktopRecorder, input_counts, read_rfb
from broker.sessions import service as sessions
from tests.desktop.conftest import Display
from tests.desktop.helpers import desktop_agent
from tests.desktop.rfbclient import RfbClient
from tests.factories import make_token, make_user
from tests.gateway.helpers import (
    ScriptedPrompter,
    events,
    recordings,
    request_session,
    ticket_ref,
    wait_events,
    wait_state,
)
from tests.gateway.test_recording import FailingBegin

BLUE = bytes([0xCC, 0x66, 0x33, 0x00]) * 64  # BGRX, the viewer's pixel format
RED = bytes([0x33, 0x33, 0xCC, 0x00]) * 64


async def _session(app: Any, gateway: Any, people: Any, tmp: Any, client: Any, display: Display):
    from agent.desktop import DesktopConfig

    agent = await desktop_agent(
        app,
        gateway,
        tmp,
        people["group"].name,
        ScriptedPrompter([True]),
        DesktopConfig.from_environment(display.env),
    )
    created = await request_session(client, people["tech_token"], agent.device_id, ["control"])
    await wait_state(client, people["tech_token"], created["id"], "approved", timeout=30)
    return agent, str(created["id"])


async def _recording(app: Any, sid: str) -> Any:
    (found,) = await recordings(app, sid)
    async with app.state.sessionmaker() as db:
        conn = await db.connection()
        ref = await ticket_ref(app, sid)
        return await read_rfb(app.state.audit_log, conn, ref, found.recording_id)


async def test_the_technicians_screen_is_sealed_with_input_counted_not_recorded(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display,
) -> None:  # fmt: skip
    display.paint("#3366cc")
    agent, sid = await _session(app, gateway, people, tmp_path, client, display)
    try:
        tech = await RfbClient.open(live_url, people["tech_token"], sid, "control")
        assert (await tech.full_frame()).pixel(10, 500) == (0x33, 0x66, 0xCC)
        await tech.pointer(100, 100)
        await tech.key(0x71, True)  # "q": the recording must not contain it
        await tech.key(0x71, False)
        display.paint("#cc3333")
        for _ in range(100):  # x11vnc notices the repaint on its next poll
            if (await tech.full_frame()).pixel(10, 500) == (0xCC, 0x33, 0x33):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the screen never turned red")
        await tech.close()
        ref = await ticket_ref(app, sid)
        await wait_events(app, ref, "recording.ended", timeout=30)
    finally:
        await agent.stop()

    screen = await _recording(app, sid)
    assert screen.complete, screen.problem
    assert (screen.width, screen.height) == (800, 600)
    server = b"".join(data for _, direction, data in screen.frames if direction == 0)
    assert BLUE in server
    assert RED in server
    assert server.index(BLUE) < server.rindex(RED)  # in the order the screen showed them
    assert [d for _, d, _ in screen.frames if d != 0] == []  # no client bytes: input counted
    totals = [sum(row[i] for row in screen.input) for i in (1, 2, 3)]
    assert totals == [2, 1, 0]  # two key messages, one pointer message, no clipboard

    # The auditor's replay endpoint: a reason, the viewing sealed, the player's JSON back.
    auditor, _ = await make_user(app, "auditor")
    token = await make_token(app, auditor)
    resp = await client.post(
        f"/api/v1/gateway/sessions/{sid}/replay",
        json={"reason": "ticket review"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-recording-format"] == "rfb"
    assert resp.headers["x-recording-complete"] == "true"
    body = resp.json()
    assert body["marks"][-1][1] == len(server)
    (viewed,) = await events(app, ref, "recording.viewed")
    assert viewed.payload["data"]["reason"] == "ticket review"

    # The ticket's bundle carries the recording and verifies offline.
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, sid)
        bundle = await app.state.audit_log.export_bundle(
            await db.connection(), record.ticket.ref, include_plaintext=True
        )
    report = verify_bundle(bundle, app.state.audit_log.signer.verifier)
    assert report.ok, report.problem
    assert b"recording.chunk" in bundle

    # Erasure crypto-shreds the ticket's key: the recording cannot be read any more.
    system, external_id = ref.split(":", 1)
    erased = await client.post(
        f"/api/v1/audit/tickets/{system}/{external_id}/erase",
        json={"reason": "GDPR request 17"},
        headers={"Authorization": f"Bearer {people['admin_token']}"},
    )
    assert erased.status_code == 200, erased.text
    async with app.state.sessionmaker() as db:
        with pytest.raises(NotFound):
            await read_rfb(app.state.audit_log, await db.connection(), ref, screen.recording_id)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_unsealable_chunk_ends_the_screen_and_seals_a_gap(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display,
) -> None:  # fmt: skip
    display.paint("#3366cc")
    agent, sid = await _session(app, gateway, people, tmp_path, client, display)
    # The start record is sealed, then the disk is full: the first chunk cannot be.
    gateway.recording_begin = FailingBegin(app.state.engine.begin, allow=1)
    try:
        tech = await RfbClient.open(live_url, people["tech_token"], sid, "control")
        ref = await ticket_ref(app, sid)
        code = None
        for _ in range(50):  # the viewer keeps asking for the screen until the broker hangs up
            try:
                await tech.request(incremental=False)
                await tech.update(timeout=5)
            except websockets.exceptions.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                break
        assert code == 4000
        await wait_state(client, people["tech_token"], sid, "failed", timeout=30)
        (gap,) = await events(app, ref, "recording.gap")
        (found,) = await recordings(app, sid)
        assert gap.payload["data"]["recording_id"] == found.recording_id
        assert "No space left on device" in gap.payload["data"]["why"]
        assert found.ended_at is None  # replay says incomplete
        assert found.chunks == 0
        assert found.format == "rfb"
    finally:
        await agent.stop()


def test_input_counts_read_whole_messages() -> None:
    key = bytes([4, 1, 0, 0, 0, 0, 0, 0x71])
    pointer = bytes([5, 0, 0, 1, 0, 2])
    cut = bytes([6, 0, 0, 0, 0, 0, 0, 2]) + b"hi"
    encodings = bytes([2, 0, 0, 1, 0, 0, 0, 0])
    update = bytes([3, 1, 0, 0, 0, 0, 0, 10, 0, 10])
    assert input_counts(key + pointer + pointer + cut + encodings + update + key) == (2, 2, 1)


class _Log:
    """The audit log's two calls the recorder and the reader use, kept in a list (a fake)."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    async def append(self, conn: Any, events: list[Any]) -> None:
        for e in events:
            self.records.append(SimpleNamespace(event_type=e.event_type, payload=e.payload))

    async def read_stream(self, conn: Any, stream: str) -> list[Any]:
        return list(self.records)


async def _recorded(chunk_bytes: int) -> tuple[_Log, str]:
    log = _Log()
    now = [0.0]
    record: Any = SimpleNamespace(
        ticket=SimpleNamespace(ref="standalone:HD-1"),
        session=SimpleNamespace(id="s1"),
        device=SimpleNamespace(id="d1"),
        technician=SimpleNamespace(display_name="Tech"),
    )

    async def failed(why: str, recording_id: str) -> None:
        raise AssertionError(why)

    recorder = DesktopRecorder(
        log,  # type: ignore[arg-type]
        lambda: contextlib.nullcontext(None),  # type: ignore[arg-type,return-value]
        record,
        chunk_seconds=1.0,
        record_input=False,
        on_failure=failed,
        clock=lambda: now[0],
        max_chunk_bytes=chunk_bytes,
    )
    init = struct.pack(">HH16sI", 800, 600, bytes(16), 2) + b"vm"
    await recorder.server_init(init)
    for i in range(10):
        now[0] = i * 0.3
        await recorder.server_data(bytes([i]) * 100)
    await recorder.closed("the viewer left")
    return log, recorder.recording_id


async def test_a_missing_cut_or_altered_chunk_shows_at_replay() -> None:
    log, rid = await _recorded(chunk_bytes=250)
    whole = await read_rfb(log, None, "standalone:HD-1", rid)  # type: ignore[arg-type]
    assert whole.complete, whole.problem
    assert whole.chunks > 2
    assert [ms for ms, _, _ in whole.frames] == [i * 300 for i in range(10)]
    assert b"".join(d for _, _, d in whole.frames) == b"".join(bytes([i]) * 100 for i in range(10))

    chunks = [r for r in log.records if r.event_type == "recording.chunk"]
    log.records.remove(chunks[1])
    found = await read_rfb(log, None, "standalone:HD-1", rid)  # type: ignore[arg-type]
    assert found.problem == "chunks are missing"

    log.records.insert(2, chunks[1])
    log.records = [r for r in log.records if r.event_type != "recording.ended"]
    found = await read_rfb(log, None, "standalone:HD-1", rid)  # type: ignore[arg-type]
    assert found.problem == "the recording has no end record: it was cut off"

    log, rid = await _recorded(chunk_bytes=250)
    last = [r for r in log.records if r.event_type == "recording.chunk"][-1]
    frames = zlib.decompress(base64.b64decode(last.payload["frames"]))
    altered = frames[:-1] + b"\xff"
    last.payload = {**last.payload, "frames": base64.b64encode(zlib.compress(altered)).decode()}
    found = await read_rfb(log, None, "standalone:HD-1", rid)  # type: ignore[arg-type]
    assert found.problem == "the recording does not match its end record"
