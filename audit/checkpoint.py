"""Signed checkpoints in the signed-note format (as used by Go's sumdb and transparency logs).

A checkpoint is the text ``<origin>\\n<size>\\n<base64 root>\\n``; the note adds a blank line
and one signature line ``— <origin> <base64(key hash[4] || Ed25519 signature[64])>``. The key
hash is the first four bytes of SHA-256(name || "\\n" || 0x01 || public key). Verifier keys
are written ``<name>+<key hash hex>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.errors import VerificationError

ALG_ED25519 = b"\x01"
DASH = "\u2014"


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str  # the whole signed note, text + blank line + signature line

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    @property
    def origin(self) -> str:
        return self.checkpoint.origin


@dataclass(frozen=True)
class VerifierKey:
    """A checkpoint verifier: the log's name and its Ed25519 public key."""

    name: str
    public_key: bytes

    def encode(self) -> str:
        hash_hex = key_hash(self.name, self.public_key).hex()
        blob = base64.b64encode(ALG_ED25519 + self.public_key).decode()
        return f"{self.name}+{hash_hex}+{blob}"

    @property
    def fingerprint(self) -> str:
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.public_key).digest()).decode()

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        # Names never contain "+", but standard base64 may: split off two fields only.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise VerificationError("a verifier key looks like NAME+HASH+BASE64")
        name, hash_hex, blob = parts
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as exc:
            raise VerificationError("verifier key: the key part is not base64") from exc
        if len(raw) != 33 or raw[:1] != ALG_ED25519:
            raise VerificationError("verifier key: not an Ed25519 key")
        key = cls(name, raw[1:])
        if key_hash(name, key.public_key).hex() != hash_hex.lower():
            raise VerificationError("verifier key: its hash does not match its name and key")
        return key

    def verify(self, note: str) -> Checkpoint:
        """Check ``note``'s signature by this key and parse its checkpoint."""
        text, sep, signatures = note.partition("\n\n")
        if not sep:
            raise VerificationError("checkpoint note has no signature block")
        text += "\n"
        wanted = key_hash(self.name, self.public_key)
        signature = None
        for line in signatures.splitlines():
            fields = line.split(" ")
            if len(fields) != 3 or fields[0] != DASH or fields[1] != self.name:
                continue
            try:
                blob = base64.b64decode(fields[2], validate=True)
            except ValueError:
                continue
            if blob[:4] == wanted and len(blob) == 68:
                signature = blob[4:]
        if signature is None:
            raise VerificationError(f"checkpoint is not signed by the key of {self.name!r}")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text.encode())
        except InvalidSignature as exc:
            raise VerificationError("checkpoint signature is invalid") from exc
        checkpoint = parse_checkpoint(text)
        if checkpoint.origin != self.name:
            raise VerificationError(
                f"checkpoint is for log {checkpoint.origin!r}, not {self.name!r}"
            )
        return checkpoint


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise VerificationError("checkpoint text must be origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit():
        raise VerificationError(f"checkpoint size {size_text!r} is not a number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError as exc:
        raise VerificationError("checkpoint root is not base64") from exc
    if len(root) != 32:
        raise VerificationError("checkpoint root is not a SHA-256 hash")
    return Checkpoint(origin, int(size_text), root)


class CheckpointSigner:
    """Signs checkpoints with the log's Ed25519 key."""

    def __init__(self, private_key: Ed25519PrivateKey, origin: str) -> None:
        self._key = private_key
        self.origin = origin
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.verifier = VerifierKey(origin, raw)
        self._hash = key_hash(origin, raw)

    @classmethod
    def generate(cls, origin: str) -> CheckpointSigner:
        return cls(Ed25519PrivateKey.generate(), origin)

    @classmethod
    def load_or_create(cls, path: Path, origin: str) -> CheckpointSigner:
        """Load the PEM key at ``path``, creating it (mode 0600) and ``path.pub`` if absent."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise VerificationError(f"{path} is not an Ed25519 private key")
            signer = cls(key, origin)
        else:
            signer = cls.generate(origin)
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = signer._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
        public = public_key_path(path)
        if not public.exists() or public.read_text().strip() != signer.verifier.encode():
            public.write_text(signer.verifier.encode() + "\n")
        return signer

    def public_key_bytes(self) -> bytes:
        return self.verifier.public_key

    def sign(self, size: int, root: bytes) -> SignedCheckpoint:
        checkpoint = Checkpoint(self.origin, size, root)
        text = checkpoint.text()
        signature = self._key.sign(text.encode())
        blob = base64.b64encode(self._hash + signature).decode()
        return SignedCheckpoint(checkpoint, f"{text}\n{DASH} {self.origin} {blob}\n")


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def load_verifier(source: str | Path) -> VerifierKey:
    """A verifier key from a file path or the key text itself."""
    text = str(source)
    path = Path(text)
    if "+" not in text or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise VerificationError(f"cannot read public key {source}: {exc.strerror}") from exc
    return VerifierKey.parse(text)
