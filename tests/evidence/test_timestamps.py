"""RFC 3161 timestamps of published checkpoints with a real ``openssl ts`` authority on
loopback: the broker timestamps the published head (token in the database and beside the
note), a TSA that is down is retried and recorded without stopping publication, and end to
end ``supportbroker serve`` timestamps on its own, ``supportbroker audit export`` writes a
bundle, and the offline verifier, started from a folder holding only the bundle, the public
key and the TSA's CA certificate, reports the time (and refuses an altered token)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from audit.bundle import verify_bundle
from audit.checkpoint import VerifierKey
from audit.stamps import latest_timestamp
from audit.timestamp import load_tsa_certificates
from broker.config import Settings
from broker.db.aftercommit import transaction
from broker.evidence import timestamps
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, SYSTEM_STREAM, record_event
from broker.evidence.timestamps import authority
from broker.tasks import publish_checkpoint
from tests.audit.test_bundle import relist, rezip
from tests.e2e.processes import BIN, free_port, serve
from tests.factories import audit_events, bearer, make_token, make_user
from tests.tsa import LocalTSA


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[LocalTSA]:
    authority = LocalTSA.start(tmp_path / "tsa")
    yield authority
    authority.stop()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timestamps, "FIRST_WAIT", 0.01)


async def _something_to_publish(app: Any) -> None:
    async with transaction(app.state.sessionmaker) as db:
        await record_event(
            db, EventType.ticket_updated, ticket="zammad:HD-23", actor=SYSTEM_ACTOR, data={"i": 1}
        )
    await publish_checkpoint(app)


def _kinds(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    wanted = {EventType.audit_checkpoint_timestamped, EventType.audit_timestamp_failed}
    return [kind for kind, _ in events if kind in wanted]


async def test_the_published_head_is_timestamped_once(
    app: Any, client: httpx.AsyncClient, tsa: LocalTSA
) -> None:
    await _something_to_publish(app)
    published = app.state.audit_log.publisher.latest()
    tsa.failures_left = 1  # the first answer is HTTP 503: retried within the tick
    publish_dir = app.state.settings.resolved_publish_dir
    done = await timestamps.timestamp_latest(
        app.state.sessionmaker, authority(tsa.url, tsa.ca), publish_dir
    )
    assert done == published.size
    assert len(tsa.requests) == 2
    token = (publish_dir / f"checkpoint-{published.size:012d}.tsr").read_bytes()
    async with app.state.sessionmaker() as db:
        stored = await latest_timestamp(await db.connection(), published.size)
    assert stored is not None
    assert stored.response == token
    assert stored.checkpoint.note == published.note
    events = await audit_events(app, SYSTEM_STREAM)
    assert _kinds(events) == [EventType.audit_checkpoint_timestamped]
    data = events[-1][1]["data"]
    assert data["checkpoint_size"] == published.size
    assert data["tsa"] == "CN=Test TSA,O=Test Time Authority"
    # Nothing new signed since: the next tick asks nothing.
    again = await timestamps.timestamp_latest(
        app.state.sessionmaker, authority(tsa.url, tsa.ca), publish_dir
    )
    assert again == 0
    assert len(tsa.requests) == 2
    # The auditor's bundle carries the token; the verifier reports when and by whom.
    auditor, _ = await make_user(app, "auditor")
    exported = await client.post(
        "/api/v1/audit/tickets/zammad/HD-23/bundle",
        json={"reason": "when did this exist?", "include_plaintext": False},
        headers=bearer(await make_token(app, auditor)),
    )
    assert exported.status_code == 200, exported.text
    key = VerifierKey.parse((await client.get("/api/v1/audit/public-key")).text)
    report = verify_bundle(exported.content, key, load_tsa_certificates(tsa.ca))
    assert report.ok, report.verdict()
    assert report.timestamp is not None
    assert report.timestamp.startswith("checkpoint timestamped at ")


async def test_a_tsa_that_is_down_is_retried_and_publication_goes_on(
    app: Any, tsa: LocalTSA
) -> None:
    await _something_to_publish(app)
    down = authority(f"http://127.0.0.1:{free_port()}/tsa", tsa.ca)
    publish_dir = app.state.settings.resolved_publish_dir
    assert await timestamps.timestamp_latest(app.state.sessionmaker, down, publish_dir) == 0
    events = await audit_events(app, SYSTEM_STREAM)
    assert _kinds(events) == [EventType.audit_timestamp_failed]
    failed = events[-1][1]["data"]
    assert failed["attempts"] == timestamps.ATTEMPTS
    assert failed["error"]
    assert not list(publish_dir.glob("*.tsr"))
    # The failure event is itself published with the next head; then the TSA is back.
    size = app.state.audit_log.publisher.latest().size
    await publish_checkpoint(app)
    assert app.state.audit_log.publisher.latest().size > size
    tsa.failures_left = timestamps.ATTEMPTS  # answers 503 every time: recorded, no crash
    up = authority(tsa.url, tsa.ca)
    assert await timestamps.timestamp_latest(app.state.sessionmaker, up, publish_dir) == 0
    assert await timestamps.timestamp_latest(app.state.sessionmaker, up, publish_dir) > size
    kinds = _kinds(await audit_events(app, SYSTEM_STREAM))
    assert kinds[-1] == EventType.audit_checkpoint_timestamped


async def test_two_replicas_keep_one_token(
    app: Any, tsa: LocalTSA, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _something_to_publish(app)
    async with app.state.sessionmaker() as db:
        seen = await timestamps.untimestamped_checkpoint(await db.connection())

    async def looked_before_the_other_stored(conn: Any) -> Any:
        return seen  # what a second replica read before the first one's commit

    monkeypatch.setattr(timestamps, "untimestamped_checkpoint", looked_before_the_other_stored)
    tsa_ = authority(tsa.url, tsa.ca)
    assert seen is not None
    assert await timestamps.timestamp_latest(app.state.sessionmaker, tsa_, None) == seen.size
    assert await timestamps.timestamp_latest(app.state.sessionmaker, tsa_, None) == 0
    assert len(tsa.requests) == 2
    kinds = _kinds(await audit_events(app, SYSTEM_STREAM))
    assert kinds == [EventType.audit_checkpoint_timestamped]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_token_from_an_untrusted_authority_is_not_kept(
    app: Any, tsa: LocalTSA, tmp_path: Path
) -> None:
    await _something_to_publish(app)
    stranger = LocalTSA.start(tmp_path / "stranger")
    stranger.stop()
    wrong = authority(tsa.url, stranger.ca)
    publish_dir = app.state.settings.resolved_publish_dir
    assert await timestamps.timestamp_latest(app.state.sessionmaker, wrong, publish_dir) == 0
    events = await audit_events(app, SYSTEM_STREAM)
    assert "does not verify against the trusted" in events[-1][1]["data"]["error"]


def test_a_tsa_url_needs_trusted_certificates(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SUPPORTBROKER_TSA_CERTS"):
        Settings(data_dir=tmp_path, tsa_url="http://127.0.0.1:9/tsa")
    with pytest.raises(ValidationError, match="SUPPORTBROKER_TSA_CERTS: no file at"):
        Settings(data_dir=tmp_path, tsa_url="http://127.0.0.1:9/tsa", tsa_certs=tmp_path / "x")


def _fresh_verify(
    folder: Path, *args: str, command: tuple[str, ...] = (sys.executable, "-I", "-m", "audit")
) -> subprocess.CompletedProcess[str]:
    """``python -I -m audit verify`` in ``folder``: no PYTHONPATH, no settings, no data."""
    return subprocess.run(
        [*command, "verify", *args],
        cwd=folder,
        env={"PATH": os.environ["PATH"], "HOME": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow  # serve, a TSA and a bare venv for the verifier: `make test` runs it
def test_serve_timestamps_and_the_offline_verifier_reports_it(
    tsa: LocalTSA, tmp_path: Path
) -> None:
    served = serve(
        tmp_path,
        SUPPORTBROKER_ENVIRONMENT="test",
        SUPPORTBROKER_SECRET_KEY="timestamps-e2e-" + "s" * 20,
        SUPPORTBROKER_TSA_URL=tsa.url,
        SUPPORTBROKER_TSA_CERTS=str(tsa.ca),
        SUPPORTBROKER_TIMESTAMP_INTERVAL_SECONDS="1",
    )
    try:
        published = served.data_dir / "checkpoints"
        deadline = time.monotonic() + 60
        while not list(published.glob("checkpoint-*.tsr")):
            assert time.monotonic() < deadline, served.log.read_text()[-3000:]
            assert served.proc.poll() is None, served.log.read_text()[-3000:]
            time.sleep(0.2)
        bundle = tmp_path / "out" / "system.zip"
        bundle.parent.mkdir()
        served.cli("audit", "export", SYSTEM_STREAM, "--out", str(bundle), "--reason", "tsa e2e")
        # The third party verifies with the key as published, never one beside the bundle.
        published_key = served.cli("audit", "public-key").stdout.strip()
    finally:
        served.stop()
    third_party = tmp_path / "third-party"
    third_party.mkdir()
    (third_party / "system.zip").write_bytes(bundle.read_bytes())
    (third_party / "log.vkey").write_text(published_key + "\n")
    (third_party / "tsa-ca.pem").write_bytes(tsa.ca.read_bytes())
    args = ["--public-key", "log.vkey", "--tsa-cert", "tsa-ca.pem"]
    ok = _fresh_verify(third_party, "system.zip", *args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok  checkpoint timestamped at " in ok.stdout
    assert " by CN=Test TSA,O=Test Time Authority (checkpoint at size " in ok.stdout
    # The one verify command the README names says the same.
    named = _fresh_verify(
        third_party, "system.zip", *args, command=(str(BIN / "supportbroker"), "audit")
    )
    assert named.returncode == 0, named.stdout + named.stderr
    assert "ok  checkpoint timestamped at " in named.stdout

    def flip(files: dict[str, bytes]) -> None:
        token = bytearray(files["timestamp.tsr"])
        token[-20] ^= 0x01
        files["timestamp.tsr"] = bytes(token)
        relist(files)

    (third_party / "tampered.zip").write_bytes(rezip(bundle.read_bytes(), flip))
    bad = _fresh_verify(third_party, "tampered.zip", *args)
    assert bad.returncode == 1
    assert "FAILED: the timestamp does not verify against the trusted TSA" in bad.stdout
