"""RFC 3161 timestamps of checkpoints: a token from a real ``openssl ts`` authority is kept
beside its checkpoint, travels in the evidence bundle with a consistency proof to the
bundle's checkpoint, and the offline verifier reports when and by whom, or says clearly why
a token does not verify (altered, for another note, another authority's)."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncEngine

from audit import cli
from audit.bundle import verify_bundle
from audit.errors import AuditError, VerificationError
from audit.stamps import latest_timestamp, store_timestamp, untimestamped_checkpoint
from audit.store import AuditLog, NewEvent
from audit.timestamp import load_tsa_certificates, request_for, verify_timestamp
from tests.tsa import LocalTSA

from .test_bundle import relist, rezip, run_cli


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[LocalTSA]:
    authority = LocalTSA.start(tmp_path / "tsa")
    yield authority
    authority.stop()


def trusted(tsa: LocalTSA) -> list[x509.Certificate]:
    return load_tsa_certificates(tsa.ca)


async def stamp_latest(engine: AsyncEngine, tsa: LocalTSA) -> int:
    """What the broker does on its cadence: timestamp the latest checkpoint, keep the token."""
    async with engine.begin() as conn:
        checkpoint = await untimestamped_checkpoint(conn)
        assert checkpoint is not None
        query, nonce = request_for(checkpoint.note)
        response = tsa.reply(query)
        stamp = verify_timestamp(response, checkpoint.note, trusted(tsa), nonce=nonce)
        await store_timestamp(conn, checkpoint.size, response, stamp, datetime.now(UTC))
        assert await untimestamped_checkpoint(conn) is None
        return checkpoint.size


async def stamped_bundle(log: AuditLog, engine: AsyncEngine, tsa: LocalTSA) -> bytes:
    async with engine.begin() as conn:
        assert await untimestamped_checkpoint(conn) is None  # no checkpoint yet
        await log.append(conn, [NewEvent("HD-1", "session.requested", {"i": 0})])
        await log.append(conn, [NewEvent("HD-2", "other", {"i": 1})] * 2)
    assert await stamp_latest(engine, tsa) == 3
    async with engine.begin() as conn:  # later records: the bundle's checkpoint extends it
        await log.append(conn, [NewEvent("HD-1", "session.ended", {"i": 2})])
        await log.append(conn, [NewEvent("HD-2", "other", {"i": 3})] * 3)
    async with engine.connect() as conn:
        assert (await latest_timestamp(conn, 2)) is None
        found = await latest_timestamp(conn, 7)
        assert found is not None
        assert found.checkpoint.size == 3
        return await log.export_bundle(conn, "HD-1", include_plaintext=False)


async def test_the_bundle_carries_the_timestamp_and_the_verifier_reports_it(
    log: AuditLog, engine: AsyncEngine, tsa: LocalTSA
) -> None:
    data = await stamped_bundle(log, engine, tsa)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        meta = json.loads(zf.read("timestamp.json"))
        assert zf.read("timestamped.note").decode().startswith("audit.test/log\n3\n")
    assert meta["size"] == 3
    assert meta["consistency"]
    report = verify_bundle(data, log.signer.verifier, trusted(tsa))
    assert report.ok, report.problem
    assert report.timestamp is not None
    assert report.timestamp.startswith("checkpoint timestamped at ")
    assert report.timestamp.endswith(" by CN=Test TSA,O=Test Time Authority")
    assert "(checkpoint at size 3, which the bundle's extends; 1 of the bundle's 2 records" in (
        report.verdict()
    )
    unchecked = verify_bundle(data, log.signer.verifier)
    assert unchecked.ok
    assert unchecked.timestamp is None
    assert "--  the bundle carries an RFC 3161 timestamp; give --tsa-cert" in unchecked.verdict()


def _swap_note(files: dict[str, bytes]) -> None:
    files["timestamped.note"] = files["checkpoint.note"]
    meta = json.loads(files["timestamp.json"])
    files["timestamp.json"] = json.dumps({"size": 7, "consistency": []}).encode()
    assert meta["size"] == 3


def _flip(files: dict[str, bytes]) -> None:
    token = bytearray(files["timestamp.tsr"])
    token[-20] ^= 0x01  # inside the signature
    files["timestamp.tsr"] = bytes(token)


CASES: list[tuple[str, Callable[[dict[str, bytes]], None], str]] = [
    ("altered token", lambda f: (_flip(f), relist(f)), "does not verify against the trusted"),
    ("token of another note", lambda f: (_swap_note(f), relist(f)), "message imprint is not"),
    (
        "wrong size",
        lambda f: (f.update({"timestamp.json": b'{"size": 2, "consistency": []}'}), relist(f)),
        "names another size",
    ),
    (
        "bad proof",
        lambda f: (f.update({"timestamp.json": b'{"size": 3, "consistency": []}'}), relist(f)),
        "consistency proof is empty",
    ),
    (
        "no metadata",
        lambda f: (f.pop("timestamp.json"), relist(f)),
        "without a readable checkpoint",
    ),
    ("not a token", lambda f: (f.update({"timestamp.tsr": b"0"}), relist(f)), "not a readable"),
    (
        "no token",
        lambda f: (f.pop("timestamp.tsr"), relist(f)),
        "TSA certificates were given but the bundle carries no timestamp",
    ),
]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("label", "change", "message"), CASES, ids=[c[0] for c in CASES])
async def test_a_bad_timestamp_fails_with_a_clear_message(
    log: AuditLog,
    engine: AsyncEngine,
    tsa: LocalTSA,
    label: str,
    change: Callable[[dict[str, bytes]], None],
    message: str,
) -> None:
    data = await stamped_bundle(log, engine, tsa)
    report = verify_bundle(rezip(data, change), log.signer.verifier, trusted(tsa))
    assert not report.ok, label
    assert report.problem is not None
    assert message in report.problem


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_another_authoritys_certificate_is_not_trusted(
    log: AuditLog, engine: AsyncEngine, tsa: LocalTSA, tmp_path: Path
) -> None:
    data = await stamped_bundle(log, engine, tsa)
    stranger = LocalTSA.start(tmp_path / "stranger")
    stranger.stop()
    report = verify_bundle(data, log.signer.verifier, trusted(stranger))
    assert not report.ok
    assert report.problem is not None
    assert "does not verify against the trusted TSA certificates" in report.problem


def test_verify_timestamp_refusals(tsa: LocalTSA) -> None:
    note = "log\n1\n" + "A" * 43 + "=\n\n— log sig\n"
    query, nonce = request_for(note)
    response = tsa.reply(query)
    with pytest.raises(AuditError, match="no trusted TSA certificate"):
        verify_timestamp(response, note, [])
    with pytest.raises(VerificationError, match="Nonce mismatch"):
        verify_timestamp(response, note, trusted(tsa), nonce=(nonce or 0) + 1)
    with pytest.raises(VerificationError, match="did not grant it"):
        verify_timestamp(_rejection(tsa, note), note, trusted(tsa))


def _rejection(tsa: LocalTSA, note: str) -> bytes:
    """A query with a digest the authority does not accept: ``openssl ts`` rejects it."""
    query, data = tsa.directory / "sha1.tsq", tsa.directory / "note.txt"
    data.write_text(note)
    subprocess.run(
        ["openssl", "ts", "-query", "-data", str(data), "-sha1", "-cert", "-out", str(query)],
        check=True,
        capture_output=True,
    )
    return tsa.reply(query.read_bytes())


def test_loading_trusted_certificates(tmp_path: Path, tsa: LocalTSA) -> None:
    assert [c.subject.rfc4514_string() for c in trusted(tsa)] == [
        "CN=Test Root CA,O=Test Time Authority"
    ]
    with pytest.raises(AuditError, match="cannot read TSA certificates"):
        load_tsa_certificates(tmp_path / "absent.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(AuditError, match="holds no PEM certificate"):
        load_tsa_certificates(junk)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_command_line_reports_the_timestamp(
    log: AuditLog,
    engine: AsyncEngine,
    tsa: LocalTSA,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = await stamped_bundle(log, engine, tsa)
    elsewhere = tmp_path / "third-party"
    elsewhere.mkdir()
    (elsewhere / "HD-1.zip").write_bytes(data)
    (elsewhere / "log.vkey").write_text(log.signer.verifier.encode() + "\n")
    (elsewhere / "tsa-ca.pem").write_bytes(tsa.ca.read_bytes())
    args = ["verify", "HD-1.zip", "--public-key", "log.vkey", "--tsa-cert", "tsa-ca.pem"]
    done = run_cli(elsewhere, *args)
    assert done.returncode == 0, done.stderr
    assert "ok  checkpoint timestamped at " in done.stdout
    assert " by CN=Test TSA,O=Test Time Authority" in done.stdout
    # the same in this process (coverage), and a certificate file that is not there
    base = ["verify", str(elsewhere / "HD-1.zip"), "--public-key", str(elsewhere / "log.vkey")]
    assert cli.main([*base, "--tsa-cert", str(elsewhere / "tsa-ca.pem")]) == 0
    assert "checkpoint timestamped at" in capsys.readouterr().out
    assert cli.main([*base, "--tsa-cert", str(elsewhere / "none.pem")]) == 2
    assert "cannot read TSA certificates" in capsys.readouterr().err
