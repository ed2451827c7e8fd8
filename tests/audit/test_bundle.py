"""Evidence bundles: export, offline verification by ``python -m audit verify`` in another
directory with only the bundle and the public key, and clear verdicts for bad evidence."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from audit import cli
from audit.bundle import verify_bundle
from audit.checkpoint import CheckpointSigner
from audit.errors import AuditError
from audit.keys import LocalFileKeyProvider
from audit.store import AuditLog, NewEvent

from .conftest import LOG_ID

REPO = Path(__file__).resolve().parents[2]


async def export(log: AuditLog, engine: AsyncEngine, *, plaintext: bool = True) -> bytes:
    async with engine.begin() as conn:
        await log.append(conn, [NewEvent("HD-1", "session.requested", {"who": "t", "i": 0})])
        await log.append(conn, [NewEvent("HD-2", "other", {"i": 1})] * 3)
        await log.append(conn, [NewEvent("HD-1", "session.ended", {"i": 2, "ü": "ß"})])
    async with engine.connect() as conn:
        return await log.export_bundle(conn, "HD-1", include_plaintext=plaintext)


def rezip(data: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return out.getvalue()


def relist(files: dict[str, bytes]) -> None:
    """Edit the manifest so its hashes match the (tampered) files: a careful forger."""
    import hashlib

    manifest = json.loads(files["manifest.json"])
    manifest["files"] = {
        n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != "manifest.json"
    }
    files["manifest.json"] = json.dumps(manifest).encode()


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "audit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_offline_verification_in_another_directory(
    log: AuditLog, engine: AsyncEngine, tmp_path: Path
) -> None:
    data = await export(log, engine)
    elsewhere = tmp_path / "third-party"
    elsewhere.mkdir()
    (elsewhere / "HD-1.zip").write_bytes(data)
    (elsewhere / "log.vkey").write_text(log.signer.verifier.encode() + "\n")
    ok = run_cli(elsewhere, "verify", "HD-1.zip", "--public-key", "log.vkey")
    assert ok.returncode == 0, ok.stderr
    assert "VERIFIED: 2 records of 'HD-1'; all checks passed" in ok.stdout
    assert "2 decrypted payloads match their ciphertexts" in ok.stdout
    (elsewhere / "bad.zip").write_bytes(data[:-40] + bytes(40))
    bad = run_cli(elsewhere, "verify", "bad.zip", "--public-key", "log.vkey")
    assert bad.returncode == 1
    assert "FAILED:" in bad.stdout
    other = CheckpointSigner.generate(LOG_ID).verifier.encode()
    stranger = run_cli(elsewhere, "verify", "HD-1.zip", "--public-key", other)
    assert stranger.returncode == 1
    assert "signed by another key" in stranger.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_bundle_contents_and_verdicts(
    log: AuditLog, engine: AsyncEngine, tmp_path: Path
) -> None:
    data = await export(log, engine, plaintext=False)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert names == [
        "checkpoint.note",
        "manifest.json",
        "proof.json",
        "public.vkey",
        "records.jsonl",
    ]
    assert manifest["checkpoint_size"] == 5
    assert manifest["records"] == 2
    assert manifest["public_key_fingerprint"] == log.signer.verifier.fingerprint
    report = verify_bundle(data, log.signer.verifier)
    assert report.ok
    assert report.stream == "HD-1"
    assert report.records == 2
    async with engine.connect() as conn:
        with pytest.raises(AuditError, match="no records"):
            await log.export_bundle(conn, "HD-9", include_plaintext=False)


def _edit_record(raw: bytes, index: int, key: str, value: object) -> bytes:
    lines = raw.splitlines()
    doc = json.loads(lines[index])
    doc[key] = value
    lines[index] = json.dumps(doc).encode()
    return b"\n".join(lines) + b"\n"


CASES: list[tuple[str, Callable[[dict[str, bytes]], None], str]] = [
    (
        "flip a byte",
        lambda f: f.update({"records.jsonl": f["records.jsonl"][:-3] + b'X"}\n'}),
        "changed after export",
    ),
    ("remove a file", lambda f: f.pop("proof.json"), "not the ones its manifest lists"),
    ("remove a file and relist", lambda f: (f.pop("proof.json"), relist(f)), "lacks proof.json"),
    ("no manifest", lambda f: f.pop("manifest.json"), "no readable manifest"),
    ("manifest garbage", lambda f: f.update({"manifest.json": b"{"}), "no readable manifest"),
    (
        "manifest format",
        lambda f: f.update({"manifest.json": b'{"format": "x"}'}),
        "unknown bundle format",
    ),
    (
        "manifest log id",
        lambda f: f.update(
            {"manifest.json": f["manifest.json"].replace(LOG_ID.encode(), b"other.example/log")}
        ),
        "is from log 'other.example/log'",
    ),
    (
        "other ticket",
        lambda f: (
            f.update({"manifest.json": f["manifest.json"].replace(b'"HD-1"', b'"HD-2"')}),
            relist(f),
        ),
        "record of another ticket",
    ),
    (
        "drop first record",
        lambda f: (
            f.update({"records.jsonl": b"".join(f["records.jsonl"].splitlines(keepends=True)[1:])}),
            relist(f),
        ),
        "sequence 2 where 1",
    ),
    ("empty records", lambda f: (f.update({"records.jsonl": b"\n"}), relist(f)), "no records"),
    (
        "malformed record",
        lambda f: (f.update({"records.jsonl": b'{"position": 1}\n'}), relist(f)),
        "malformed record",
    ),
    (
        "records not json",
        lambda f: (f.update({"records.jsonl": b"nope\n"}), relist(f)),
        "malformed",
    ),
    (
        "proof garbage",
        lambda f: (f.update({"proof.json": b"[]"}), relist(f)),
        "proof.json is malformed",
    ),
    (
        "proof other leaf",
        lambda f: (
            f.update(
                {
                    "proof.json": f["proof.json"].replace(
                        b'"leaf_position": 4', b'"leaf_position": 3'
                    )
                }
            ),
            relist(f),
        ),
        "not for the last record",
    ),
    (
        "proof path",
        lambda f: (f.update({"proof.json": f["proof.json"].replace(b'["', b'["00')}), relist(f)),
        "inclusion proof",
    ),
    (
        "payload edited",
        lambda f: (
            f.update({"payloads.jsonl": f["payloads.jsonl"].replace(b'"who": "t"', b'"who": "x"')}),
            relist(f),
        ),
        "not what the record holds",
    ),
    (
        "payload for stranger",
        lambda f: (
            f.update(
                {
                    "payloads.jsonl": f["payloads.jsonl"]
                    + b'{"record_id": "nobody", "payload": {}}\n'
                }
            ),
            relist(f),
        ),
        "not in the bundle",
    ),
    ("no data keys", lambda f: (f.pop("data_keys.json"), relist(f)), "data_keys.json"),
    (
        "wrong data key",
        lambda f: (
            f.update(
                {
                    "data_keys.json": json.dumps(
                        dict.fromkeys(json.loads(f["data_keys.json"]), "A" * 43 + "=")
                    ).encode()
                }
            ),
            relist(f),
        ),
        "does not decrypt",
    ),
    (
        "missing data key",
        lambda f: (f.update({"data_keys.json": b"{}"}), relist(f)),
        "no data key for record",
    ),
    ("not a zip", lambda f: None, "not a readable evidence bundle"),
    (
        "other key file",
        lambda f: (
            f.update({"public.vkey": CheckpointSigner.generate(LOG_ID).verifier.encode().encode()}),
            relist(f),
        ),
        "signed by another key",
    ),
    (
        "unlinked record",
        lambda f: (
            f.update(
                {"records.jsonl": _edit_record(f["records.jsonl"], 1, "prev_hash", "00" * 32)}
            ),
            relist(f),
        ),
        "does not link",
    ),
    (
        "altered record",
        lambda f: (
            f.update(
                {"records.jsonl": _edit_record(f["records.jsonl"], 1, "event_type", "forged")}
            ),
            relist(f),
        ),
        "record was altered",
    ),
]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("name", "change", "message"), CASES, ids=[c[0] for c in CASES])
async def test_corrupted_bundles(
    log: AuditLog,
    engine: AsyncEngine,
    name: str,
    change: Callable[[dict[str, bytes]], None],
    message: str,
) -> None:
    data = await export(log, engine)
    bad = b"PK-not-really" if name == "not a zip" else rezip(data, change)
    report = verify_bundle(bad, log.signer.verifier)
    assert not report.ok
    assert message in (report.problem or ""), report.problem
    assert report.verdict().endswith(f"FAILED: {report.problem}")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_bundle_from_another_log(engine: AsyncEngine, tmp_path: Path, log: AuditLog) -> None:
    other_signer = CheckpointSigner.generate("other.example/log")
    other = AuditLog(
        log_id="other.example/log",
        keys=LocalFileKeyProvider(tmp_path / "o.json"),
        signer=other_signer,
    )
    data = await export(other, engine)
    assert verify_bundle(data, other_signer.verifier).ok
    report = verify_bundle(data, log.signer.verifier)
    assert not report.ok
    assert "is from log 'other.example/log'" in (report.problem or "")


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = CheckpointSigner.generate(LOG_ID).verifier.encode()
    assert cli.main(["verify", str(tmp_path / "none.zip"), "--public-key", key]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["verify", "x.zip", "--public-key", str(tmp_path / "no.vkey")]) == 2
    assert "error: cannot read public key" in capsys.readouterr().err
    (tmp_path / "b.zip").write_bytes(b"junk")
    assert cli.main(["verify", str(tmp_path / "b.zip"), "--public-key", key]) == 1
    assert "FAILED: not a readable evidence bundle" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main([])
    cli._progress(1, 3)
    cli._progress(3, 3)
    err = capsys.readouterr().err
    assert "[##########....................] 1/3 records" in err
    assert err.endswith("3/3 records\n")


def test_python_dash_m_audit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import runpy

    (tmp_path / "b.zip").write_bytes(b"junk")
    key = CheckpointSigner.generate(LOG_ID).verifier.encode()
    monkeypatch.setattr(
        sys, "argv", ["audit", "verify", str(tmp_path / "b.zip"), "--public-key", key]
    )
    with pytest.raises(SystemExit) as info:
        runpy.run_module("audit", run_name="__main__")
    assert info.value.code == 1
    assert "FAILED" in capsys.readouterr().out


def _set_erased(value: object) -> Callable[[dict[str, bytes]], None]:
    def change(files: dict[str, bytes]) -> None:
        manifest = json.loads(files["manifest.json"])
        if value is None:
            del manifest["erased"]
        else:
            manifest["erased"] = value
        files["manifest.json"] = json.dumps(manifest).encode()

    return change


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_bundle_of_an_erased_ticket_says_so(
    log: AuditLog, engine: AsyncEngine, tmp_path: Path
) -> None:
    plain = await export(log, engine, plaintext=False)
    assert json.loads(zipfile.ZipFile(io.BytesIO(plain)).read("manifest.json"))["erased"] is False
    assert "ERASED" not in verify_bundle(plain, log.signer.verifier).verdict()
    async with engine.begin() as conn:
        await log.erase_stream(conn, "HD-1", actor={"user": "admin"})
        await log.sign_checkpoint(conn)
    async with engine.connect() as conn:
        data = await log.export_bundle(conn, "HD-1", include_plaintext=True)
    assert json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))["erased"] is True
    (tmp_path / "HD-1.zip").write_bytes(data)
    (tmp_path / "log.vkey").write_text(log.signer.verifier.encode() + "\n")
    out = run_cli(tmp_path, "verify", "HD-1.zip", "--public-key", "log.vkey")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ERASED: the ticket's content was erased at " in out.stdout
    assert "the payloads of the 2 records sealed before it can never be read" in out.stdout
    # The flag is checked against the records' headers: a forger cannot hide the erasure.
    hidden = verify_bundle(rezip(data, _set_erased(False)), log.signer.verifier)
    assert not hidden.ok
    assert "erased flag disagrees" in (hidden.problem or "")
    claimed = verify_bundle(rezip(plain, _set_erased(True)), log.signer.verifier)
    assert "erased flag disagrees" in (claimed.problem or "")
    older = verify_bundle(rezip(data, _set_erased(None)), log.signer.verifier)  # before the flag
    assert older.ok
    assert "ERASED:" in older.verdict()
