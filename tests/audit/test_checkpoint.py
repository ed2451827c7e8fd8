"""Signed-note checkpoints: exact bytes, Go's key-hash rule, verifier keys, key files, publishers.

The note format is Go's ``golang.org/x/mod/sumdb/note``: text, a blank line, then
``— <name> <base64(keyhash[4] || signature)>`` lines; the key hash is the first four bytes of
SHA-256(name || "\\n" || 0x01 || Ed25519 public key).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    VerifierKey,
    key_hash,
    load_verifier,
    parse_checkpoint,
    public_key_path,
)
from audit.errors import VerificationError
from audit.publish import DirectoryPublisher, FileAppendPublisher

SEED = bytes(range(32))
ROOT = hashlib.sha256(b"root").digest()


def fixed_signer(origin: str = "example.com/log") -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.from_private_bytes(SEED), origin)


def test_note_bytes_and_signature_line() -> None:
    signer = fixed_signer()
    signed = signer.sign(42, ROOT)
    text = f"example.com/log\n42\n{base64.b64encode(ROOT).decode()}\n"
    assert signed.checkpoint.text() == text
    head, sig_line = signed.note.split("\n\n")
    assert head + "\n" == text
    assert sig_line.endswith("\n")
    assert sig_line.count("\n") == 1
    dash, name, blob_b64 = sig_line.rstrip("\n").split(" ")
    assert dash == "\u2014"
    assert name == "example.com/log"
    blob = base64.b64decode(blob_b64)
    public = signer.public_key_bytes()
    expected_hash = hashlib.sha256(b"example.com/log\n\x01" + public).digest()[:4]
    assert blob[:4] == expected_hash == key_hash("example.com/log", public)
    Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], text.encode())
    assert len(blob) == 68
    assert (signed.size, signed.root, signed.origin) == (42, ROOT, "example.com/log")
    # Ed25519 is deterministic: the whole note is a golden vector for this seed.
    assert signer.sign(42, ROOT).note == signed.note
    assert signer.verifier.verify(signed.note) == Checkpoint("example.com/log", 42, ROOT)


def test_verifier_key_encode_parse() -> None:
    signer = fixed_signer()
    public = signer.public_key_bytes()
    encoded = signer.verifier.encode()
    name, hash_hex, blob = encoded.split("+", 2)
    assert name == "example.com/log"
    assert hash_hex == key_hash(name, public).hex()
    assert base64.b64decode(blob) == b"\x01" + public
    assert VerifierKey.parse(encoded + "\n") == signer.verifier
    assert VerifierKey.parse(f"{name}+{hash_hex.upper()}+{blob}") == signer.verifier
    fingerprint = base64.b64encode(hashlib.sha256(public).digest()).decode()
    assert signer.verifier.fingerprint == "SHA256:" + fingerprint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-plus-signs", "NAME\\+HASH\\+BASE64"),
        ("name+00000000", "NAME\\+HASH\\+BASE64"),
        ("a+00000000+***", "not base64"),
        ("a+00000000+" + base64.b64encode(b"\x02" + bytes(32)).decode(), "not an Ed25519"),
        ("a+00000000+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "not an Ed25519"),
        ("a+00000000+" + base64.b64encode(b"\x01" + bytes(32)).decode(), "hash does not match"),
    ],
)
def test_verifier_key_refusals(text: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        VerifierKey.parse(text)


def test_verify_refusals() -> None:
    signer = fixed_signer()
    other = CheckpointSigner.generate("example.com/log")
    note = signer.sign(3, ROOT).note
    head, sig = note.split("\n\n")
    with pytest.raises(VerificationError, match="no signature block"):
        signer.verifier.verify(head)
    with pytest.raises(VerificationError, match="not signed by"):
        other.verifier.verify(note)
    # Lines that are not our signature are skipped: other names, shapes, non-base64 blobs.
    noise = "\u2014 someone-else AAAA\njunk\n\u2014 example.com/log ***\n"
    assert signer.verifier.verify(f"{head}\n\n{noise}{sig}").size == 3
    with pytest.raises(VerificationError, match="not signed by"):
        signer.verifier.verify(f"{head}\n\n{noise}")
    tampered = note.replace("\n3\n", "\n4\n", 1)
    with pytest.raises(VerificationError, match="signature is invalid"):
        signer.verifier.verify(tampered)
    # Same key, another origin in the text: refused even though the signature is valid.
    other_text = f"other.example/log\n3\n{base64.b64encode(ROOT).decode()}\n"
    sig_bytes = Ed25519PrivateKey.from_private_bytes(SEED).sign(other_text.encode())
    blob = base64.b64encode(key_hash("example.com/log", signer.public_key_bytes()) + sig_bytes)
    forged = f"{other_text}\n\u2014 example.com/log {blob.decode()}\n"
    with pytest.raises(VerificationError, match="is for log"):
        signer.verifier.verify(forged)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("origin\n1\n", "origin, size and root"),
        ("origin\n1\nroot", "origin, size and root"),
        ("origin\n-1\nAAAA\n", "not a number"),
        ("origin\n1\n***\n", "not base64"),
        ("origin\n1\nAAAA\n", "not a SHA-256"),
    ],
)
def test_parse_checkpoint_refusals(text: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_checkpoint(text)


def test_load_or_create(tmp_path: Path) -> None:
    path = tmp_path / "k" / "signing.pem"
    first = CheckpointSigner.load_or_create(path, "o")
    assert path.stat().st_mode & 0o777 == 0o600
    public = public_key_path(path)
    assert public.read_text() == first.verifier.encode() + "\n"
    public.write_text("stale\n")
    again = CheckpointSigner.load_or_create(path, "o")
    assert again.verifier == first.verifier
    assert public.read_text() == first.verifier.encode() + "\n"
    assert CheckpointSigner.load_or_create(path, "o").verifier == first.verifier
    ec_path = tmp_path / "ec.pem"
    ec_path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(VerificationError, match="not an Ed25519"):
        CheckpointSigner.load_or_create(ec_path, "o")


def test_load_verifier(tmp_path: Path) -> None:
    signer = fixed_signer()
    encoded = signer.verifier.encode()
    assert load_verifier(encoded) == signer.verifier
    key_file = tmp_path / "public.vkey"
    key_file.write_text(encoded + "\n")
    assert load_verifier(key_file) == signer.verifier
    assert load_verifier(str(key_file)) == signer.verifier
    with pytest.raises(VerificationError, match="cannot read public key"):
        load_verifier(tmp_path / "missing.vkey")


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_publishers(tmp_path: Path, kind: str) -> None:
    signer = fixed_signer()
    publisher = (
        DirectoryPublisher(tmp_path / "pub")
        if kind == "directory"
        else FileAppendPublisher(tmp_path / "pub" / "checkpoints.txt")
    )
    assert publisher.latest() is None
    publisher.publish(signer.sign(2, ROOT))
    publisher.publish(signer.sign(5, ROOT))
    publisher.publish(signer.sign(3, ROOT))  # never backwards
    latest = publisher.latest()
    assert latest is not None
    assert latest.size == 5
    assert signer.verifier.verify(latest.note).size == 5
    if kind == "directory":
        assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == [
            "checkpoint-000000000002.note",
            "checkpoint-000000000005.note",
            "latest.note",
        ]
        (tmp_path / "pub" / "latest.note").write_text("no signature block\n")
        with pytest.raises(VerificationError, match="no signature block"):
            publisher.latest()
    else:
        path = tmp_path / "pub" / "checkpoints.txt"
        assert path.read_text().count("\n%%\n") == 2
        path.write_text("\n%%\n")
        assert publisher.latest() is None
